"""The benchmarking harness: measurement, workers, budgets, derived columns, report schema.

No test asserts a speed: timings on a shared machine prove nothing. They check that the
harness measures what it says, reports what went wrong, and writes the documented schema.
"""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest

import convkit
from convkit import machine
from convkit.backend import Capabilities, ConvBackend
from convkit.bench import (
    BenchSettings,
    Row,
    measure,
    measure_row,
    results,
    run_benchmark,
    run_job,
    runner,
    stats,
    worker,
)
from convkit.bench import table as report
from convkit.cases import SUITES, parse_case
from convkit.idle_threads import blas_idle_spin

TINY = parse_case("name=tiny,n=2,c=3,o=4,hw=6,k=3,p=1")
TINY_GROUPED = parse_case("name=tiny-grouped,n=1,c=4,o=4,hw=5,k=2,g=2,p=same")
FAST = {"min_time": 1e-4, "repeats": 2}


def _settings(**overrides: object) -> BenchSettings:
    return BenchSettings(**{**FAST, **overrides})  # type: ignore[arg-type]


class _Wrong(ConvBackend):
    """Forward is off by one everywhere; the gradients are right (delegated)."""

    def forward(self, x, weight, geom):
        return convkit.get_backend("im2col-strided").forward(x, weight, geom) + 1

    def backward_input(self, grad_output, weight, geom):
        return convkit.get_backend("im2col-strided").backward_input(grad_output, weight, geom)

    def backward_weight(self, x, grad_output, geom):
        return convkit.get_backend("im2col-strided").backward_weight(x, grad_output, geom)


class _Failing(_Wrong):
    def forward(self, x, weight, geom):
        raise ArithmeticError("kaboom in forward")


class _Float32Only(_Wrong):
    capabilities = Capabilities(dtypes=frozenset({"float32"}))


@pytest.fixture
def registered():
    """Register runtime backends for one test; they are removed afterwards."""
    names = []

    def register(name: str, backend: type[ConvBackend]) -> str:
        convkit.register_backend(name, backend)
        names.append(name)
        return name

    yield register
    for name in names:
        convkit.unregister_backend(name)


@pytest.fixture
def references(tmp_path):
    """Reference files for TINY (every op) in float32, as the parent writes them."""
    runner.write_references([TINY], _settings(), tmp_path)
    return tmp_path


# ------------------------------------------------------------------------------ settings


@pytest.mark.parametrize(
    ("field", "value"),
    [("ops", ("forward", "backward")), ("dtype", "float16"), ("threads", 0), ("repeats", 0),
     ("min_time", 0.0), ("naive_budget", -1.0)],
)
def test_settings_reject_bad_values_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        BenchSettings(**{field: value})


def test_settings_default_to_every_op_and_usable_core():
    settings = BenchSettings()
    assert settings.ops == ("forward", "input-grad", "weight-grad")
    assert settings.threads == machine.usable_cores()


# ------------------------------------------------------------------------------ one row


@pytest.mark.parametrize("op", ["forward", "input-grad", "weight-grad"])
def test_measure_row_reports_times_error_and_memory(op, references):
    backend = convkit.get_backend("im2col-strided")
    row = measure_row(backend, TINY, op, _settings(repeats=3),
                      references / worker.reference_name(0, op))
    assert row.status == "ok" and row.reason is None
    assert 0 < row.min_s <= row.median_s
    assert row.cpu_median_s > 0
    assert row.first_call_s > 0
    assert row.repeats == 3 and row.calls >= 3
    assert row.max_abs_error is not None and row.error_vs_bound <= 1
    out_shape = {"forward": TINY.geometry().output_shape, "input-grad": TINY.input_shape,
                 "weight-grad": TINY.weight_shape}[op]
    assert row.memory_bytes >= np.prod(out_shape) * 4  # the float32 result, at least


def test_memory_counts_what_a_backend_keeps_between_calls(references):
    """Buffers kept from earlier calls are invisible to the traced call; the row adds them."""
    from convkit_backends.im2col_strided import Im2colStridedBackend

    class KeepsBuffers(Im2colStridedBackend):
        def retained_bytes(self):
            return 50 * 2**20

    convkit.register_backend("keeps-buffers", KeepsBuffers())
    backend = convkit.get_backend("keeps-buffers")
    kept = measure_row(backend, TINY, "forward", _settings(repeats=1),
                       references / worker.reference_name(0, "forward"))
    plain = measure_row(convkit.get_backend("im2col-strided"), TINY, "forward",
                        _settings(repeats=1), references / worker.reference_name(0, "forward"))
    # the same call otherwise: equal but for Python's own small allocations
    assert abs(kept.memory_bytes - plain.memory_bytes - 50 * 2**20) < 2**16


def test_one_measurement_lasts_min_time():
    clock, cpu_clock = iter(range(100)), iter(range(0, 100, 2))
    calls = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(measure.time, "perf_counter", lambda: float(next(clock)))
        mp.setattr(measure.time, "process_time", lambda: float(next(cpu_clock)))
        per_call, cpu_per_call, count = measure.measure_calls(lambda: calls.append(1), min_time=4.5)
    assert (per_call, count) == (1.0, 5) and len(calls) == 5  # 5 ticks reach 4.5 s
    assert cpu_per_call == 2 / 5  # the CPU clock is read once before and once after


def test_a_row_without_reference_has_no_error_column():
    backend = convkit.get_backend("im2col-take")
    row = measure_row(backend, TINY, "forward", _settings(min_time=0.001, repeats=2), None)
    assert row.status == "ok" and row.calls >= 2
    assert row.max_abs_error is None and row.error_vs_bound is None


def test_wrong_result_is_an_error_row_with_its_timing(registered, references):
    backend = convkit.get_backend(registered("wrong", _Wrong))
    row = measure_row(backend, TINY, "forward", _settings(), references / "0-forward.npz")
    assert row.status == "error"
    assert "wrong result" in row.reason and "error bound" in row.reason
    assert row.median_s is not None and row.max_abs_error == pytest.approx(1, rel=1e-5)
    right = measure_row(backend, TINY, "input-grad", _settings(),
                        references / "0-input-grad.npz")
    assert right.status == "ok"


def test_exception_in_backend_is_an_error_row(registered):
    backend = convkit.get_backend(registered("failing", _Failing))
    row = measure_row(backend, TINY, "forward", _settings(), None)
    assert row.status == "error"
    assert row.reason == "ArithmeticError: kaboom in forward"
    assert row.median_s is None


def test_unsupported_configuration_is_skipped_with_the_reason(registered):
    backend = convkit.get_backend(registered("only32", _Float32Only))
    row = measure_row(backend, TINY, "forward", _settings(dtype="float64"), None)
    assert row.status == "skipped"
    assert "float64 is not supported" in row.reason


def test_naive_over_budget_is_skipped_for_every_op_of_the_case(monkeypatch):
    calls = []
    real = measure.run_operation
    monkeypatch.setattr(
        measure, "run_operation", lambda op, arrays, case, name: calls.append((case.name, op))
        or real(op, arrays, case, name)
    )
    big = parse_case("name=big,n=32,c=4,o=4,hw=64,k=3")  # ~1 s per naive call, tiny ~1 ms
    events = []
    job = {"backend": "naive", "cases": [worker.case_to_dict(big), worker.case_to_dict(TINY)],
           "settings": {**FAST, "ops": ["forward", "weight-grad"], "dtype": "float32",
                        "threads": 1, "naive_budget": 0.25},
           "reference_dir": None}
    run_job(job, events.append)
    rows = [Row(**e["row"]) for e in events if e["event"] == "row"]
    assert [(r.case, r.op, r.status) for r in rows] == [
        ("big", "forward", "skipped"), ("big", "weight-grad", "skipped"),
        ("tiny", "forward", "ok"), ("tiny", "weight-grad", "ok"),
    ]
    assert "budget" in rows[0].reason and rows[1].reason == rows[0].reason
    assert calls[0] == ("big", "forward")  # tried once, interrupted
    assert ("big", "weight-grad") not in calls  # the budget is per case: not even tried
    assert {("tiny", "forward"), ("tiny", "weight-grad")} <= set(calls)


def test_worker_takes_measurements_in_rounds_over_all_rows(monkeypatch):
    calls = []
    real = measure.run_operation
    monkeypatch.setattr(
        measure, "run_operation", lambda op, arrays, case, name: calls.append(op)
        or real(op, arrays, case, name)
    )
    events = []
    job = {"backend": "im2col-take", "cases": [worker.case_to_dict(TINY)],
           "settings": {"ops": ["forward", "weight-grad"], "dtype": "float32", "threads": 1,
                        "min_time": 1e-12, "repeats": 3, "naive_budget": 1.0},
           "reference_dir": None}
    run_job(job, events.append)
    f, w = "forward", "weight-grad"
    assert calls == [f, w,  # the warm-up of each row
                     f, w, f, w, f, w,  # three rounds of one measurement (one call) per row
                     f, w]  # the traced call of each row
    statuses = [e["text"] for e in events if e["event"] == "status"]
    assert statuses[-3:] == [f"im2col-take: measurement round {i} of 3" for i in (1, 2, 3)]
    rows = [e["row"] for e in events if e["event"] == "row"]
    assert [r["repeats"] for r in rows] == [3, 3]


def test_budget_interrupts_a_call_instead_of_waiting_for_it():
    finished = []

    def slow() -> None:
        time.sleep(5)
        finished.append(True)

    with pytest.raises(measure._OverBudget):
        measure._first_call(slow, 0.05)
    assert finished == []


def test_traced_call_counts_numpy_allocations_and_admits_invisible_ones():
    result, size = measure.traced_call(lambda: np.ones(10**6))
    assert result.shape == (10**6,)
    assert size >= 8 * 10**6
    preallocated = np.ones(10**6)
    _, hidden = measure.traced_call(lambda: preallocated)  # nothing allocated that we can see
    assert hidden is None
    _, view = measure.traced_call(lambda: np.ones((4, 10)).T[1:])  # a view of numpy's memory
    assert view is not None and view >= 320


def test_memory_of_torch_results_is_not_available():
    torch = pytest.importorskip("torch")
    _, size = measure.traced_call(lambda: torch.ones(4).numpy())  # tiny: the size test passes
    assert size is None


# ------------------------------------------------------------------------------ whole runs


def test_run_in_process_orders_rows_and_fills_derived_columns():
    settings = _settings(ops=("forward", "weight-grad"), threads=1)
    result = run_benchmark([TINY, TINY_GROUPED], ["im2col-strided", "naive"], settings,
                           isolate=False)
    keys = [(r["case"], r["op"], r["backend"]) for r in result["results"]]
    assert keys == [(c, op, b) for c in ("tiny", "tiny-grouped")
                    for op in ("forward", "weight-grad") for b in ("im2col-strided", "naive")]
    peak = result["peak_gflops"]["float32"]
    for r in result["results"]:
        assert r["status"] == "ok", r
        flops = (TINY if r["case"] == "tiny" else TINY_GROUPED).geometry().flops
        assert r["gflops"] == pytest.approx(flops / r["median_s"] / 1e9)
        assert r["peak_percent"] == pytest.approx(100 * r["gflops"] / peak)
        assert r["baseline"] == "naive"
    naive = {(r["case"], r["op"]): r["median_s"] for r in result["results"]
             if r["backend"] == "naive"}
    for r in result["results"]:
        assert r["speedup"] == pytest.approx(naive[r["case"], r["op"]] / r["median_s"])


def test_baseline_falls_back_to_the_slowest_backend_that_ran():
    rows = [Row("c", "forward", "naive", "skipped", "too slow"),
            Row("c", "forward", "a", median_s=2.0), Row("c", "forward", "b", median_s=1.0),
            Row("c", "forward", "wrong", "error", "wrong result", median_s=9.0)]
    stats.add_derived(rows, flops=4 * 10**9, peak=10.0, baseline="naive")
    assert [r.baseline for r in rows] == [None, "a", "a", "a"]
    assert [r.speedup for r in rows] == [None, 1.0, 2.0, pytest.approx(2 / 9)]
    assert [r.gflops for r in rows] == [None, 2.0, 4.0, pytest.approx(4 / 9)]
    assert rows[2].peak_percent == 40.0


def test_unavailable_backend_gives_skipped_or_error_rows():
    settings = _settings(ops=("forward",), threads=1)
    for explicit, status in ((True, "error"), (False, "skipped")):
        result = run_benchmark([TINY], ["no-such-backend", "im2col-take"], settings,
                               isolate=False, named_explicitly=explicit)
        missing, present = result["results"]
        assert missing["status"] == status
        assert missing["reason"].startswith("backend unavailable: unknown backend")
        assert present["status"] == "ok"
        assert result["backends"][0]["status"] == "unavailable"


def test_each_backend_runs_in_its_own_worker_process():
    settings = _settings(ops=("forward",), threads=1)
    result = run_benchmark([TINY], ["im2col-strided", "no-such-backend"], settings)
    assert result["settings"]["isolation"] == "process"
    ok, missing = result["results"]
    assert ok["status"] == "ok" and ok["error_vs_bound"] <= 1
    assert missing["status"] == "error" and "unknown backend" in missing["reason"]


def test_threads_setting_reaches_every_pool_in_the_worker_process():
    pytest.importorskip("numba")
    result = run_benchmark([TINY], ["numba"], _settings(ops=("forward",), threads=1))
    pools = result["backends"][0]["thread_pools"]
    assert pools["numba"] == 1
    assert len(pools) >= 2  # numba and numpy's BLAS at least
    assert set(pools.values()) == {1}


def test_worker_environment_sizes_every_thread_pool():
    env = runner._worker_env(3)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "NUMBA_NUM_THREADS"):
        assert env[var] == "3"


def test_a_worker_that_dies_is_reported_with_its_last_words():
    events = []
    with pytest.raises(RuntimeError, match=r"exited with code 1: KeyError: 'settings'"):
        runner._run_worker_process({"backend": "naive"}, 1, events.append)
    assert events == []


def test_dead_worker_becomes_error_rows(monkeypatch):
    def die(job, threads, emit):
        raise RuntimeError("worker process exited with code -11: Segmentation fault")

    monkeypatch.setattr(runner, "_run_worker_process", die)
    result = run_benchmark([TINY], ["naive"], _settings(ops=("forward", "input-grad")))
    assert [r["status"] for r in result["results"]] == ["error", "error"]
    assert all("code -11" in r["reason"] for r in result["results"])
    assert result["backends"][0]["status"] == "error"
    table = report.to_rows_table(result)
    assert "worker failed: naive (worker process exited with code -11" in table
    assert table.count("error: worker process exited") == 2  # its rows stay in the table


# ------------------------------------------------------------------------------ the schema


def check_report_schema(result: dict) -> None:
    """Assert that ``result`` has the documented keys and types (also used by test_cli)."""
    str_or_none = (str, type(None))
    num = (int, float)
    num_or_none = (int, float, type(None))
    assert result["schema"] == "convkit-bench/2"
    assert set(result) == {"schema", "convkit", "machine", "started", "duration_s",
                           "background_load", "settings", "peak_gflops", "cases", "backends",
                           "results", "summary", "totals", "bandwidth_gbs"}
    assert result["bandwidth_gbs"] > 0
    assert result["background_load"] is None or result["background_load"] >= 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", result["started"])
    assert isinstance(result["duration_s"], float)
    source = result["convkit"]
    assert source["version"] == convkit.__version__
    assert source["commit"] is None or re.fullmatch(r"[0-9a-f]{40}", source["commit"])
    assert isinstance(source["dirty"], (bool, type(None)))
    m = result["machine"]
    assert set(m) == {"cpu", "cores", "platform", "python", "numpy", "numba", "torch", "blas",
                      "blas_idle_spin"}
    assert isinstance(m["cpu"], str) and isinstance(m["cores"], int) and m["cores"] >= 1
    assert m["numpy"] == np.__version__
    assert all(isinstance(m[k], str_or_none) for k in ("numba", "torch"))
    assert m["blas_idle_spin"] == blas_idle_spin()  # tests/test_idle_threads.py has its states
    for lib in m["blas"]:
        assert set(lib) == {"library", "version", "threading", "architecture"}
    s = result["settings"]
    assert set(s) == {"ops", "dtype", "threads", "min_time", "repeats", "passes", "naive_budget",
                      "suite", "baseline", "isolation", "reference_backend", "placement",
                      "default_backend"}
    assert s["isolation"] in ("process", "in-process")
    assert set(result["peak_gflops"]) == {s["dtype"]}
    assert result["peak_gflops"][s["dtype"]] > 0
    for case in result["cases"]:
        assert set(case) == {"name", "spec", "input_shape", "weight_shape", "output_shape",
                             "stride", "padding", "dilation", "groups", "flops", "count"}
        assert isinstance(case["count"], int) and case["count"] >= 1
        assert parse_case(case["spec"]).name == case["name"]
        assert isinstance(case["flops"], int) and len(case["padding"]) == 4
    for b in result["backends"]:
        assert set(b) == {"name", "status", "reason", "load_s", "warmup_s", "prepare_s",
                          "thread_pools"}
        assert b["status"] in ("ok", "unavailable", "error")
        if b["status"] == "ok":
            assert all(isinstance(n, int) for n in b["thread_pools"].values())
        else:
            assert b["thread_pools"] is None
    rows = result["results"]
    assert len(rows) == len(result["cases"]) * len(s["ops"]) * len(result["backends"])
    assert len(result["summary"]) == len(result["cases"]) * len(s["ops"])
    for line in result["summary"]:
        assert set(line) == {"case", "op", "fastest", "median_s", "vs_default", "vs_torch"}
    totals = result["totals"]
    assert totals is None or set(totals) == {"forward_s", "training_step_s"}
    for r in rows:
        assert tuple(r) == report.FIELDS
        assert r["status"] in results.STATUSES
        assert (r["reason"] is None) == (r["status"] == "ok")
        for key in ("median_s", "min_s", "cpu_median_s", "first_call_s", "prepare_s",
                    "pass_spread",
                    "max_abs_error", "error_vs_bound", "gflops", "peak_percent", "speedup"):
            assert isinstance(r[key], num_or_none), key
        for key in ("calls", "repeats", "memory_bytes"):
            assert isinstance(r[key], (int, type(None))), key
        assert (r["pass_medians"] is None) == (r["status"] != "ok")
        assert (r["samples"] is None) == (r["status"] != "ok")
        if r["pass_medians"] is not None:
            assert all(isinstance(m, num) for m in r["pass_medians"])
            assert len(r["samples"]) == len(r["pass_medians"])
            assert sum(map(len, r["samples"])) == r["repeats"]
            assert all(isinstance(t, float) for times in r["samples"] for t in times)
        assert isinstance(r["pass_p_value"], num_or_none)
        ci = r["median_ci_s"]
        assert ci is None or (len(ci) == 2 and ci[0] <= ci[1])
        if r["status"] == "ok":
            assert all(isinstance(r[k], num) for k in ("median_s", "min_s", "gflops"))
            assert isinstance(r["baseline"], str)


def test_report_schema():
    result = run_benchmark([TINY], ["naive", "im2col-take"], _settings(threads=1),
                           isolate=False, suite="custom")
    check_report_schema(result)
    json.loads(report.to_json(result))  # serialisable as it is


def test_table_warns_when_other_processes_kept_the_machine_busy():
    result = run_benchmark([TINY], ["im2col-take"], _settings(threads=1, ops=("forward",)),
                           isolate=False)
    warning = "WARNING: other processes kept 1.5 of the"
    result["background_load"] = 1.5
    assert warning in report.to_rows_table(result)
    result["background_load"] = 0.0
    assert "other processes kept" not in report.to_rows_table(result)
    result["background_load"] = None  # not measurable here
    assert "other processes kept" not in report.to_rows_table(result)


def test_busy_machine_is_reported_at_the_start(monkeypatch):
    # Snapshots: the run's start, around the matmul peak (50 s of others' CPU in well under
    # 50 s), then none at the end (not measurable).
    snapshots = iter([(0.0, 0.0), (0.0, 0.0), (50.0, 0.0)])
    monkeypatch.setattr(runner, "cpu_seconds", lambda: next(snapshots, None))
    warnings = []
    run_benchmark([TINY], ["im2col-take"], _settings(ops=("forward",), threads=1),
                  isolate=False, on_warning=warnings.append)
    (warning,) = warnings
    assert warning.startswith("other processes are keeping") and "cores busy" in warning
    quiet = iter([(0.0, 0.0), (0.0, 0.0), (0.0, 0.0)])
    monkeypatch.setattr(runner, "cpu_seconds", lambda: next(quiet, None))
    run_benchmark([TINY], ["im2col-take"], _settings(ops=("forward",), threads=1),
                  isolate=False, on_warning=warnings.append)
    assert len(warnings) == 1


# ------------------------------------------------------------------------------ machine


def test_convkit_source_names_this_checkout_commit():
    source = machine.convkit_source()
    if source["commit"] is None:
        pytest.skip("convkit is not running from a git checkout")
    assert re.fullmatch(r"[0-9a-f]{40}", source["commit"])
    assert isinstance(source["dirty"], bool)


def test_background_load_counts_other_processes_not_ours():
    before = (100.0, 10.0)  # (machine busy CPU s, our CPU s)
    assert machine.background_load(before, (104.0, 13.0), seconds=2.0) == 0.5
    assert machine.background_load(before, (103.0, 13.0), seconds=2.0) == 0.0
    assert machine.background_load(None, (104.0, 13.0), seconds=2.0) is None


def test_cpu_seconds_grow_with_our_own_work():
    before = machine.cpu_seconds()
    if before is None:
        pytest.skip("no /proc/stat here")
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:
        pass
    after = machine.cpu_seconds()
    assert after[1] - before[1] >= 0.05
    assert after[0] >= before[0]


def test_matmul_peak_is_a_positive_rate():
    assert machine.matmul_peak("float64", threads=1, seconds=0.01) > 0


def test_suite_cases_survive_the_trip_to_a_worker():
    for case in SUITES["quick"]:
        assert worker.case_from_dict(json.loads(json.dumps(worker.case_to_dict(case)))) == case


# ------------------------------------------------------------------------------ passes


@pytest.mark.parametrize(
    ("repeats", "passes", "shares"),
    [(7, 3, [3, 2, 2]), (2, 3, [1, 1]), (5, 1, [5]), (6, 2, [3, 3])],
)
def test_repeats_are_shared_out_over_the_passes(repeats, passes, shares):
    settings = _settings(repeats=repeats, passes=passes)
    assert stats.repeats_per_pass(settings) == shares


def test_backends_take_turns_and_rows_gather_every_pass(monkeypatch):
    jobs = []
    real = runner.run_job
    monkeypatch.setattr(runner, "run_job", lambda job, emit: jobs.append(job) or real(job, emit))
    result = run_benchmark([TINY], ["naive", "im2col-take"],
                           _settings(ops=("forward",), repeats=5, passes=3), isolate=False)
    assert [(j["backend"], j["settings"]["repeats"]) for j in jobs] == [
        ("naive", 2), ("im2col-take", 2), ("naive", 2), ("im2col-take", 2),
        ("naive", 1), ("im2col-take", 1)]
    assert [j["only"] for j in jobs[:2]] == [None, None]
    assert all([list(key) for key in j["only"]] == [[0, "forward"]] for j in jobs[2:])
    for row in result["results"]:
        assert row["status"] == "ok" and row["repeats"] == 5 and row["calls"] >= 5
        assert row["min_s"] <= row["median_s"]


def test_later_passes_measure_only_rows_that_are_still_ok(monkeypatch):
    jobs = []
    real = runner.run_job
    monkeypatch.setattr(runner, "run_job", lambda job, emit: jobs.append(job) or real(job, emit))
    convkit.register_backend("wrong", _Wrong)
    result = run_benchmark([TINY], ["wrong"], _settings(ops=("forward", "input-grad"),
                                                        repeats=2, passes=2), isolate=False)
    rows = {r["op"]: r for r in result["results"]}
    assert rows["forward"]["status"] == "error" and rows["forward"]["repeats"] == 1
    assert rows["input-grad"]["status"] == "ok" and rows["input-grad"]["repeats"] == 2
    assert [list(k) for k in jobs[1]["only"]] == [[0, "input-grad"]]


def test_a_failure_in_a_later_pass_makes_the_row_an_error(monkeypatch):
    class FailsOnSecondWorker(_Wrong):
        """Right until the second pass replaces its forward with _Wrong's."""

        def forward(self, x, weight, geom):
            return convkit.get_backend("im2col-strided").forward(x, weight, geom)

    real = runner.run_job

    def second_pass_breaks(job, emit):
        if job["only"] is not None:
            FailsOnSecondWorker.forward = _Wrong.forward
        return real(job, emit)

    monkeypatch.setattr(runner, "run_job", second_pass_breaks)
    convkit.register_backend("flaky", FailsOnSecondWorker)
    result = run_benchmark([TINY], ["flaky"], _settings(ops=("forward",), repeats=2, passes=2),
                           isolate=False)
    (row,) = result["results"]
    assert row["status"] == "error" and "wrong result" in row["reason"]


def test_passes_that_disagree_mark_the_row_unsteady(monkeypatch):
    # Every measurement of the second pass takes 1.5x as long as those of the first.
    seconds_per_call = {}
    real_run_job = runner.run_job

    def run_job(job, emit):
        seconds_per_call["now"] = 1.5e-3 if job["only"] is not None else 1e-3
        return real_run_job(job, emit)

    monkeypatch.setattr(runner, "run_job", run_job)
    monkeypatch.setattr(measure, "measure_calls",
                        lambda call, min_time: (seconds_per_call["now"], 0.0, 1))
    result = run_benchmark([TINY], ["im2col-take"],
                           _settings(ops=("forward",), repeats=10, passes=2), isolate=False)
    (row,) = result["results"]
    assert row["pass_spread"] == pytest.approx(0.5)
    assert row["pass_medians"] == pytest.approx([1e-3, 1.5e-3])
    assert row["median_s"] == pytest.approx(1e-3)
    assert row["pass_p_value"] < 0.01
    assert row["samples"] == [[1e-3] * 5, [1.5e-3] * 5]
    table = report.to_rows_table(result)
    assert "WARNING: 1 row changed speed by more than 15% between passes, beyond" in table
    assert (f"unsteady (passes differ, Kruskal-Wallis p < 0.01; largest pass median over the "
            f"smallest): {TINY.name} forward im2col-take +50%") in table


def test_a_slow_pass_does_not_move_the_median(monkeypatch):
    """Pass 1 runs slow (a busy spell): the row is pass 2's median, CPU time included."""
    seconds_per_call = {}
    real_run_job = runner.run_job

    def run_job(job, emit):
        first = job["only"] is None
        seconds_per_call["now"] = (3e-3, 2e-3) if first else (1e-3, 0.5e-3)
        return real_run_job(job, emit)

    monkeypatch.setattr(runner, "run_job", run_job)
    monkeypatch.setattr(measure, "measure_calls",
                        lambda call, min_time: (*seconds_per_call["now"], 1))
    result = run_benchmark([TINY], ["im2col-take"],
                           _settings(ops=("forward",), repeats=6, passes=2), isolate=False)
    (row,) = result["results"]
    assert row["pass_medians"] == pytest.approx([3e-3, 1e-3])
    assert (row["median_s"], row["min_s"]) == pytest.approx((1e-3, 1e-3))
    assert row["cpu_median_s"] == pytest.approx(0.5e-3)
    assert row["repeats"] == 6


def test_only_the_least_steady_rows_are_named(monkeypatch):
    monkeypatch.setattr(measure, "measure_calls", lambda call, min_time: (1e-3, 0.0, 1))
    result = run_benchmark([TINY], ["im2col-take"],
                           _settings(ops=("forward",), repeats=4, passes=2), isolate=False)
    (row,) = result["results"]
    result["results"] = [dict(row, case=f"case{i}", pass_spread=0.2 + i / 10, pass_p_value=1e-3)
                         for i in range(8)]
    table = report.to_rows_table(result)
    assert "WARNING: 8 rows changed speed by more than 15% between passes" in table
    named = table.split("largest pass median over the smallest): ")[1]
    assert named.startswith("case7 forward im2col-take +90%, case6 forward")
    assert "case3" in named and "case2" not in named
    assert named.split("\n")[0].endswith(
        ", and 3 more (pass_spread, pass_p_value in JSON and CSV)")


def test_a_spread_within_the_noise_is_not_unsteady(monkeypatch):
    # Both passes draw from one noisy distribution: their medians differ by chance.
    draws = iter([1.0e-3, 2.0e-3, 1.1e-3, 1.9e-3, 1.5e-3, 1.4e-3] * 2)
    monkeypatch.setattr(measure, "measure_calls", lambda call, min_time: (next(draws), 0.0, 1))
    result = run_benchmark([TINY], ["im2col-take"],
                           _settings(ops=("forward",), repeats=6, passes=2), isolate=False)
    (row,) = result["results"]
    assert row["pass_spread"] > 0.15 and row["pass_p_value"] > 0.01
    assert "unsteady" not in report.to_rows_table(result)


def test_passes_that_agree_leave_the_row_steady(monkeypatch):
    monkeypatch.setattr(measure, "measure_calls", lambda call, min_time: (1e-3, 0.0, 1))
    result = run_benchmark([TINY], ["im2col-take"],
                           _settings(ops=("forward",), repeats=4, passes=2), isolate=False)
    assert result["results"][0]["pass_spread"] == 0.0
    assert "unsteady" not in report.to_rows_table(result)
    one_pass = run_benchmark([TINY], ["im2col-take"],
                             _settings(ops=("forward",), repeats=4, passes=1), isolate=False)
    assert one_pass["results"][0]["pass_spread"] is None


# ------------------------------------------------------------------- placement and statistics


def test_each_measurement_gets_a_fresh_placement_of_the_same_data():
    arrays = TINY.arrays("float32")
    rng = np.random.default_rng(0)
    copies = [measure.placed(arrays, rng) for _ in range(20)]
    offsets = set()
    for copy in copies:
        for original, placed_array in zip((arrays.x, arrays.weight, arrays.grad_output),
                                          (copy.x, copy.weight, copy.grad_output), strict=True):
            np.testing.assert_array_equal(placed_array, original)
            assert placed_array.dtype == original.dtype and placed_array.flags.c_contiguous
            assert not np.shares_memory(placed_array, original)
        base = copy.x.base
        while base.base is not None:
            base = base.base
        offset = copy.x.__array_interface__["data"][0] - base.__array_interface__["data"][0]
        assert offset % measure.PLACEMENT_STEP == 0 and offset < measure.PLACEMENT_RANGE
        offsets.add(offset)
    assert len(offsets) > 5  # 64 possible offsets, 20 draws


def test_measurements_run_on_the_placed_inputs(monkeypatch):
    seen = []
    real = measure.run_operation
    monkeypatch.setattr(measure, "run_operation",
                        lambda op, arrays, case, name: seen.append(arrays.x)
                        or real(op, arrays, case, name))
    m = measure.Measurement(convkit.get_backend("im2col-take"), TINY, "forward",
                            _settings(min_time=1e-9))
    m.start()
    for _ in range(3):
        m.time_once()
    # The warm-up's inputs, then a new copy per measurement (seen keeps them all alive, so
    # no copy can reuse a freed one's memory).
    inputs = [seen[0], *(x for i, x in enumerate(seen) if i and x is not seen[i - 1])]
    assert len(inputs) == 4
    assert not any(np.shares_memory(a, b) for i, a in enumerate(inputs) for b in inputs[:i])


@pytest.mark.parametrize(("n", "ranks"), [(5, None), (6, (1, 6)), (9, (2, 8)), (30, (10, 21))])
def test_median_interval_is_the_order_statistic_interval(n, ranks):
    values = [float(v) for v in range(n, 0, -1)]  # unsorted on purpose
    interval = stats.median_interval(values)
    assert interval == (None if ranks is None else [float(r) for r in ranks])


def test_empty_batch_is_measured_not_a_crash():
    empty = parse_case("name=empty,n=0,c=3,o=4,hw=8,k=3")
    result = run_benchmark([empty], ["im2col-take"], _settings(threads=1), isolate=False)
    assert [r["status"] for r in result["results"]] == ["ok"] * 3
    assert all(r["max_abs_error"] == 0.0 for r in result["results"])


# ------------------------------------------------------------------------------ progress


def test_progress_adds_up_to_the_expected_seconds_weighted_by_cost():
    big = parse_case("name=big,n=4,c=32,o=32,hw=32,k=3,p=1")
    settings = _settings(ops=("forward", "input-grad"), repeats=4, passes=2, threads=1)
    steps = []
    run_benchmark([TINY, big], ["im2col-take"], settings, isolate=False,
                  on_progress=lambda seconds, text: steps.append((seconds, text)))
    expected = runner.expected_seconds([TINY, big], ["im2col-take"], settings)
    assert sum(seconds for seconds, _ in steps) == pytest.approx(expected)
    by_row = {text: seconds for seconds, text in steps if seconds > 0}
    assert by_row["im2col-take big forward"] > by_row["im2col-take tiny forward"]


def test_a_first_call_that_keeps_running_is_announced(monkeypatch):
    from convkit_backends.naive import NaiveBackend

    class SlowFirstCall(NaiveBackend):
        calls = 0

        def forward(self, x, weight, geom):
            SlowFirstCall.calls += 1
            if SlowFirstCall.calls == 1:
                time.sleep(0.3)
            return super().forward(x, weight, geom)

    monkeypatch.setattr(worker, "SLOW_FIRST_CALL_S", 0.05)
    convkit.register_backend("slow-start", SlowFirstCall)
    notices = []
    run_benchmark([TINY], ["slow-start"], _settings(ops=("forward",), threads=1),
                  isolate=False, on_notice=notices.append)
    assert notices == ["slow-start: the first call of tiny is still running after 0.05 s (a "
                       "large layer, or compilation: numba compiles its kernels once per "
                       "install, tens of seconds)"]


def test_auto_is_tuned_before_its_first_call_and_the_cost_reported_apart(measuring_auto):
    from convkit import autotune

    convkit.autotune.set_candidates(["im2col-take", "im2col-strided"])
    result = run_benchmark([TINY], ["auto"], _settings(ops=("forward",), threads=1),
                           isolate=False)
    (row,) = result["results"]
    assert row["status"] == "ok"
    assert row["prepare_s"] > row["first_call_s"]  # several calls of each candidate, vs one
    (stored,) = autotune.stored_decisions()["decisions"].values()
    assert stored["backend"] in ("im2col-take", "im2col-strided")
    assert result["backends"][0]["prepare_s"] == pytest.approx(row["prepare_s"])
    assert "auto measures its candidates here): auto" in report.to_rows_table(result)


@pytest.mark.parametrize(("declared", "status"), [(4.0, "ok"), (1.0, "error")])
def test_a_result_is_judged_against_the_bound_its_backend_declares(declared, status, tmp_path):
    from convkit_backends.naive import NaiveBackend

    class Perturbed(NaiveBackend):  # off by 3x the direct-sum bound at worst
        capabilities = Capabilities(error_factor=declared)

        def forward(self, x, weight, geom):
            terms = geom.weight_shape[1] * geom.kernel_size[0] * geom.kernel_size[1]
            return super().forward(x, weight, geom) * (1 + 3 * terms * np.finfo(geom.dtype).eps)

    convkit.register_backend("perturbed", Perturbed)
    settings = _settings(ops=("forward",), threads=1)
    runner.write_references([TINY], settings, tmp_path)
    row = measure_row(convkit.get_backend("perturbed"), TINY, "forward", settings,
                      tmp_path / worker.reference_name(0, "forward"))
    assert row.status == status
    assert (row.error_vs_bound <= 1) == (status == "ok")
