"""The ``convkit`` command line, driven through click's CliRunner.

End-to-end runs use tiny layers, one or two fast backends and short measurements; the
plumbing of each option into the harness is checked by recording what ``bench`` asks for.
"""

from __future__ import annotations

import csv
import io
import json
import sys

import numpy as np
import pytest
from click.testing import CliRunner, Result
from test_bench import check_report_schema

import convkit
from convkit import cli
from convkit.cases import SPEC_HELP, SUITES
from convkit.cli import bench_commands, layers
from convkit.registry import backend_infos

TINY = "name=tiny,n=2,c=3,o=4,hw=6,k=3,p=1"
FAST = ["--min-time", "0.0001", "--repeats", "2", "--threads", "1", "--no-progress"]


def run(*args: str) -> Result:
    result = CliRunner().invoke(cli.main, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def bench_json(*args: str) -> dict:
    result = run("bench", "--format", "json", *FAST, *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture
def recorded(monkeypatch):
    """Replace the harness: record what ``bench`` asks for and return an empty report."""
    calls = []

    def fake_run(cases, backends, settings, **options):
        calls.append({"cases": cases, "backends": backends, "settings": settings, **options})
        return {"results": []}

    monkeypatch.setattr(bench_commands, "run_benchmark", fake_run)
    monkeypatch.setitem(bench_commands._FORMATTERS, "json", lambda report: "{}\n")
    return calls


# ------------------------------------------------------------------------------ end to end


def test_json_run_of_a_custom_case_in_process():
    data = bench_json("--case", TINY, "--backend", "naive,im2col-strided", "--in-process")
    check_report_schema(data)
    assert [c["name"] for c in data["cases"]] == ["tiny"]
    assert [b["name"] for b in data["backends"]] == ["naive", "im2col-strided"]
    assert data["settings"]["isolation"] == "in-process"
    assert data["settings"]["threads"] == 1 and data["settings"]["repeats"] == 2
    assert data["settings"]["suite"] is None
    assert all(r["status"] == "ok" for r in data["results"])
    assert {r["baseline"] for r in data["results"]} == {"naive"}


def test_default_run_uses_a_worker_process_per_backend():
    data = bench_json("--case", TINY, "--backend", "im2col-take", "--op", "input-grad")
    assert data["settings"]["isolation"] == "process"
    (row,) = data["results"]
    assert (row["op"], row["status"]) == ("input-grad", "ok")
    assert row["baseline"] == "im2col-take"  # naive did not run: the slowest, itself


def test_float64_and_chosen_ops():
    data = bench_json("--case", TINY, "--backend", "im2col-take", "--in-process",
                      "--dtype", "float64", "--op", "weight-grad,forward")
    assert data["settings"]["dtype"] == "float64"
    assert list(data["peak_gflops"]) == ["float64"]
    assert [r["op"] for r in data["results"]] == ["weight-grad", "forward"]
    assert all(r["max_abs_error"] < 1e-12 for r in data["results"])


def test_baseline_and_naive_budget():
    big = "name=big,n=32,c=4,o=4,hw=64,k=3"  # about 1 s per naive call
    data = bench_json("--case", TINY, "--case", big, "--backend", "naive,im2col-take",
                      "--in-process", "--op", "forward", "--baseline", "im2col-take",
                      "--naive-budget", "0.25")
    assert data["settings"]["naive_budget"] == 0.25
    rows = {(r["case"], r["backend"]): r for r in data["results"]}
    assert rows["big", "naive"]["status"] == "skipped"
    assert "over 0.25 s" in rows["big", "naive"]["reason"]
    assert rows["tiny", "naive"]["status"] == "ok"
    for case in ("tiny", "big"):
        assert rows[case, "im2col-take"]["baseline"] == "im2col-take"
        assert rows[case, "im2col-take"]["speedup"] == 1.0
    naive = rows["tiny", "naive"]
    assert naive["speedup"] == pytest.approx(
        rows["tiny", "im2col-take"]["median_s"] / naive["median_s"])


def test_errors_are_reported_in_full_and_set_the_exit_status():
    from test_bench import _Wrong

    convkit.register_backend("wrong-forward", _Wrong)
    try:
        result = run("bench", *FAST, "--case", TINY, "--backend", "wrong-forward,im2col-take",
                     "--in-process", "--format", "json")
    finally:
        convkit.unregister_backend("wrong-forward")
    assert result.exit_code == 1
    rows = json.loads(result.stdout)["results"]
    assert [(r["op"], r["backend"], r["status"]) for r in rows] == [
        ("forward", "wrong-forward", "error"), ("forward", "im2col-take", "ok"),
        ("input-grad", "wrong-forward", "ok"), ("input-grad", "im2col-take", "ok"),
        ("weight-grad", "wrong-forward", "ok"), ("weight-grad", "im2col-take", "ok"),
    ]
    assert "wrong result" in rows[0]["reason"]
    assert "1 of 6 results are errors" in result.stderr


def test_default_table_names_the_fastest_backend_per_layer():
    result = run("bench", *FAST, "--case", TINY, "--case", "name=wide,c=2,o=2,hw=9,k=2",
                 "--backend", "naive,im2col-take", "--in-process", "--op", "forward,input-grad")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("case "))
    assert lines[header].split() == ["case", "op", "naive", "im2col-take", "fastest", "vs",
                                     "default", "vs", "torch"]
    body = [line.split() for line in lines[header + 1:header + 5]]
    assert [cells[:2] for cells in body] == [["tiny", "forward"], ["tiny", "input-grad"],
                                            ["wide", "forward"], ["wide", "input-grad"]]
    report = json.loads(run("bench", *FAST, "--case", TINY, "--backend", "naive,im2col-take",
                            "--in-process", "--op", "forward", "--format", "json").stdout)
    (summary,) = report["summary"]
    medians = {r["backend"]: r["median_s"] for r in report["results"]}
    assert summary["fastest"] == min(medians, key=medians.__getitem__)
    assert any("fastest: the quickest convkit backend" in line for line in lines)


def test_rows_table_shows_header_rows_and_notes():
    result = run("bench", *FAST, "--case", TINY, "--case", "name=wide,c=2,o=2,hw=9,k=2",
                 "--backend", "naive,im2col-take", "--in-process", "--op", "forward",
                 "--format", "rows")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"convkit {convkit.__version__}")
    assert lines[0].endswith("median of the fastest of 2 passes (2 measurements of >= 0.1 ms "
                             "in all), all backends in one process")
    assert lines[1].startswith("machine: ")
    assert "matmul peak (float32" in lines[2] and "GFLOP/s" in lines[2]
    header = next(i for i, line in enumerate(lines) if line.startswith("case "))
    for column in ("median", "min", "GFLOP/s", "%peak", "speedup", "max error", "memory"):
        assert column in lines[header]
    body = lines[header + 1:header + 5]
    assert [line.split()[:3] for line in body] == [
        ["tiny", "forward", "naive"], ["tiny", "forward", "im2col-take"],
        ["wide", "forward", "naive"], ["wide", "forward", "im2col-take"],
    ]
    assert all(line.endswith("  ok") for line in body)
    assert any(line.startswith("first calls, not in any timing") for line in lines)


def test_one_pass_reports_the_median_of_all_measurements():
    result = run("bench", *FAST, "--passes", "1", "--case", TINY, "--backend", "im2col-take",
                 "--in-process", "--op", "forward")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].endswith(
        "median of 2 measurements of >= 0.1 ms, all backends in one process")


def test_csv_has_one_line_per_row():
    result = run("bench", *FAST, "--case", TINY, "--backend", "naive,im2col-take",
                 "--in-process", "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 3 * 2
    assert {r["status"] for r in rows} == {"ok"}
    assert float(rows[0]["median_s"]) > 0
    pass_medians = [float(v) for v in rows[0]["pass_medians"].split()]
    assert len(pass_medians) == 2  # --repeats 2: two passes of one measurement
    assert min(pass_medians) == float(rows[0]["min_s"])


def test_output_file_gets_the_results_and_stdout_nothing(tmp_path):
    target = tmp_path / "results.json"
    result = run("bench", *FAST, "--case", TINY, "--backend", "im2col-take", "--in-process",
                 "--format", "json", "--output", str(target))
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert f"to {target}" in result.stderr
    check_report_schema(json.loads(target.read_text()))


def test_progress_goes_to_stderr_only():
    args = ["bench", *FAST, "--case", TINY, "--backend", "im2col-take", "--in-process",
            "--op", "forward", "--format", "csv"]
    shown = run(*args, "--progress")
    hidden = run(*args)
    assert "benchmarking" in shown.stderr and "benchmarking" not in shown.stdout
    assert "benchmarking" not in hidden.stderr


def test_busy_machine_warning_goes_to_stderr_at_once(monkeypatch):
    from convkit.bench import runner

    snapshots = iter([(0.0, 0.0), (0.0, 0.0), (50.0, 0.0)])
    monkeypatch.setattr(runner, "cpu_seconds", lambda: next(snapshots, None))
    result = run("bench", *FAST, "--case", TINY, "--backend", "im2col-take", "--in-process",
                 "--op", "forward", "--format", "csv")
    assert result.exit_code == 0, result.output
    assert "warning: other processes are keeping" in result.stderr
    assert "warning" not in result.stdout


def test_unavailable_backend_in_all_is_skipped_and_named_in_the_table(monkeypatch):
    monkeypatch.setattr(layers, "list_backends", lambda: ["im2col-take", "ghost"])
    result = run("bench", *FAST, "--case", TINY, "--in-process", "--op", "forward")
    assert result.exit_code == 0, result.output
    assert "not run: ghost (unknown backend 'ghost'" in result.stdout
    assert "ghost  " not in result.stdout  # its rows are summarised, not listed
    data = bench_json("--case", TINY, "--in-process", "--op", "forward")
    assert [(r["backend"], r["status"]) for r in data["results"]] == [
        ("im2col-take", "ok"), ("ghost", "skipped")]


# ------------------------------------------------------------------------------ plumbing


def test_defaults(recorded):
    assert run("bench", "--format", "json").exit_code == 0
    (call,) = recorded
    assert call["cases"] == list(SUITES["quick"])
    assert call["backends"] == convkit.list_backends()
    assert call["baseline"] == "naive" and call["isolate"] is True
    assert call["named_explicitly"] is False and call["suite"] == "quick"
    s = call["settings"]
    assert (s.dtype, s.ops, s.min_time, s.repeats, s.passes, s.naive_budget) == (
        "float32", ("forward", "input-grad", "weight-grad"), 0.03, 15, 3, 1.0)


def test_every_option_reaches_the_harness(recorded):
    result = run("bench", "--format", "json", "--suite", "standard", "--case", TINY,
                 "--backend", "numba, naive", "--op", "input-grad", "--dtype", "float64",
                 "--threads", "3", "--baseline", "numba", "--min-time", "0.2",
                 "--repeats", "4", "--passes", "2", "--naive-budget", "0.5", "--in-process")
    assert result.exit_code == 0, result.output
    (call,) = recorded
    assert call["cases"][:-1] == list(SUITES["standard"]) and call["cases"][-1].name == "tiny"
    assert call["backends"] == ["numba", "naive"] and call["named_explicitly"] is True
    assert call["baseline"] == "numba" and call["isolate"] is False
    assert call["suite"] == "standard"
    s = call["settings"]
    assert (s.ops, s.dtype, s.threads, s.min_time, s.repeats, s.passes, s.naive_budget) == (
        ("input-grad",), "float64", 3, 0.2, 4, 2, 0.5)


def test_case_alone_replaces_the_default_suite(recorded):
    assert run("bench", "--case", TINY, "--format", "json").exit_code == 0
    assert [c.name for c in recorded[0]["cases"]] == ["tiny"]
    assert recorded[0]["suite"] is None


@pytest.mark.parametrize(
    ("args", "option", "message"),
    [
        (["--backend", "nosuch"], "--backend", "unknown backend 'nosuch'"),
        (["--backend", "naive,naive"], "--backend", "backend 'naive' is given twice"),
        (["--backend", ""], "--backend", "unknown backend ''"),
        (["--op", "backward"], "--op", "unknown operation 'backward'"),
        (["--op", "forward,forward"], "--op", "operation 'forward' is given twice"),
        (["--case", "c=3,o=4"], "--case", "case spec needs 'hw'"),
        (["--case", "c=3,o=4,hw=5,k=9"], "--case", "kernel size 9x9"),
        (["--case", "c=3,o=4,hw=5,k=3,g=2"], "--case", "groups=2"),
        (["--case", TINY, "--case", TINY], "--case", "two cases are named 'tiny'"),
        (["--suite", "huge"], "--suite", "'huge' is not one of"),
        (["--dtype", "float16"], "--dtype", "'float16' is not one of"),
        (["--format", "xml"], "--format", "'xml' is not one of"),
        (["--threads", "0"], "--threads", "0 is not in the range x>=1"),
        (["--repeats", "0"], "--repeats", "0 is not in the range x>=1"),
        (["--passes", "0"], "--passes", "0 is not in the range x>=1"),
        (["--min-time", "0"], "--min-time", "0.0 is not in the range x>0"),
        (["--naive-budget", "-1"], "--naive-budget", "-1.0 is not in the range x>0"),
        (["--backend", "numba", "--baseline", "naive"], "--baseline",
         "'naive' is not among the benchmarked backends (numba)"),
        (["--output", "/nonexistent-dir/out.json"], "--output",
         "directory '/nonexistent-dir' does not exist"),
    ],
)
def test_bad_options_are_usage_errors_naming_the_option(recorded, args, option, message):
    result = run("bench", *args)
    assert result.exit_code == 2
    assert "Usage: " in result.stderr
    assert f"'{option}'" in result.stderr
    assert message in " ".join(result.stderr.split())
    assert recorded == []


def test_help_documents_the_case_syntax_and_options():
    result = run("bench", "--help")
    assert result.exit_code == 0
    flat = " ".join(result.stdout.split())
    assert " ".join(SPEC_HELP.split()) in flat
    for option in ("--backend", "--suite", "--case", "--op", "--dtype", "--threads", "--format",
                   "--output", "--baseline", "--min-time", "--repeats", "--passes",
                   "--naive-budget", "--in-process", "--progress"):
        assert option in flat


def test_version():
    result = run("--version")
    assert result.exit_code == 0 and convkit.__version__ in result.stdout


# ------------------------------------------------------------------------------ backends


def _listing(result) -> tuple[str, list[list[str]]]:
    """The first line of `convkit backends` and its table's rows, split into words."""
    lines = result.stdout.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("backend ")))
    end = lines.index("", header)
    return lines[0], [line.split() for line in lines[header:end]]


def test_backends_lists_every_backend_with_what_it_supports():
    result = run("backends")
    assert result.exit_code == 0, result.output
    first, rows = _listing(result)
    assert first == "calls without backend= run auto (chosen by the default)"
    assert rows[0][:3] == ["backend", "status", "distribution"]
    names = [row[0] for row in rows[1:]]
    assert names == [info.name for info in backend_infos()]  # the installed, and torch
    assert set(convkit.list_backends()) <= set(names)
    naive = next(line for line in result.stdout.splitlines() if line.startswith("naive "))
    assert "available" in naive and "convkit" in naive and "the reference" in naive
    assert convkit.get_backend("naive").capabilities.describe() in naive
    assert rows[names.index("auto") + 1][1] == "*"


def test_backends_names_the_backend_chosen_by_the_environment(monkeypatch):
    monkeypatch.setenv("CONVKIT_BACKEND", "numba")
    result = run("backends")
    first, rows = _listing(result)
    assert first == "calls without backend= run numba (chosen by CONVKIT_BACKEND=numba)"
    assert [row[:2] for row in rows if row[0] in ("auto", "numba")] == [["auto", "available"],
                                                                         ["numba", "*"]]
    entries = {e["name"]: e for e in json.loads(run("backends", "--format", "json").stdout)}
    assert entries["numba"]["selected"] and not entries["auto"]["selected"]
    assert entries["numba"]["selected_by"] == "CONVKIT_BACKEND=numba"


def test_a_missing_torch_is_not_installed_with_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # torch cannot be found or imported
    monkeypatch.delitem(sys.modules, "convkit_backends.torch_reference", raising=False)
    convkit.refresh_backends()
    assert "torch" not in convkit.list_backends()
    result = run("backends", "--format", "json")
    assert result.exit_code == 0, result.output
    entries = {e["name"]: e for e in json.loads(result.stdout)}
    assert set(entries) == {*convkit.list_backends(), "torch"}
    torch = entries["torch"]
    assert torch["status"] == "not installed" and torch["supports"] is None
    assert "pip install torch==2.13.0 --index-url" in torch["reason"]
    assert "CPU-only" in torch["reason"]
    assert torch["distribution"] == "convkit"
    assert torch["target"] == "convkit_backends.torch_reference:TorchBackend"
    assert entries["naive"]["status"] == "available" and entries["naive"]["reason"] is None
    with pytest.raises(convkit.BackendUnavailableError, match="not installed"):
        convkit.conv2d(np.ones((1, 1, 3, 3)), np.ones((1, 1, 3, 3)), backend="torch")


# ------------------------------------------------------------------------------ check


def test_check_passes_a_correct_backend():
    result = run("check", "im2col-take", "--dtype", "float64")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("backend 'im2col-take'")
    assert lines[-1].startswith("PASS:") and " 0 failed" in lines[-1]
    assert not any("float32" in line for line in lines[1:])


class _OffByOne(type(convkit.get_backend("naive"))):
    """A backend whose forward pass is wrong by exactly one in its first element."""

    def forward(self, x, weight, geom):
        y = super().forward(x, weight, geom)
        y.flat[0] += 1
        return y


def test_check_fails_a_wrong_backend_with_exit_status_1():
    convkit.register_backend("off-by-one", _OffByOne)
    result = run("check", "off-by-one", "--dtype", "float64", "--max-failures", "2")
    assert result.exit_code == 1
    assert result.stdout.splitlines()[-1].startswith("FAIL:")
    assert "forward" in result.stdout and "FAILED" in result.stdout


@pytest.mark.parametrize(
    ("args", "option", "message"),
    [
        ((), "NAME", "Missing argument"),
        (("numbaa",), "NAME", "did you mean 'numba'"),
        (("naive", "--dtype", "float16"), "--dtype", "float16"),
        (("naive", "--max-failures", "0"), "--max-failures", "0"),
    ],
)
def test_check_usage_errors(args, option, message):
    result = run("check", *args)
    assert result.exit_code == 2
    assert option in result.output and message in result.output


def test_check_of_a_backend_that_is_not_installed_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.delitem(sys.modules, "convkit_backends.torch_reference", raising=False)
    convkit.refresh_backends()
    result = run("check", "torch")
    assert result.exit_code == 1
    assert "backend 'torch'" in result.output and "not installed" in result.output
    assert "pip install torch" in result.output


def test_table_header_names_the_worker_passes():
    report = bench_json("--case", TINY, "--backend", "naive", "--in-process", "--op", "forward")
    report["settings"].update(isolation="process", repeats=7, passes=3)
    header = bench_commands._FORMATTERS["table"](report).splitlines()[0]
    assert header.endswith("3 worker processes per backend, in turns")


def test_network_suite_reports_totals():
    result = run("bench", *FAST, "--suite", "vgg16", "--image-size", "32", "--backend",
                 "im2col-take", "--in-process", "--op", "forward", "--format", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert sum(case["count"] for case in report["cases"]) == 13
    medians = {r["case"]: r["median_s"] for r in report["results"]}
    expected = sum(case["count"] * medians[case["name"]] for case in report["cases"])
    assert report["totals"]["forward_s"]["im2col-take"] == pytest.approx(expected)
    assert report["totals"]["training_step_s"]["im2col-take"] is None  # no gradients ran
    table = run("bench", *FAST, "--suite", "vgg16", "--image-size", "32", "--backend",
                "im2col-take", "--in-process", "--op", "forward").stdout
    assert "network (13 convolutions)" in table and "forward pass" in table


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--suite", "quick", "--batch", "2"], "applies to network suites only"),
     (["--suite", "convnext-t", "--image-size", "1"], "too small for cnx")],
)
def test_network_options_are_checked(args, message):
    result = run("bench", *args)
    assert result.exit_code == 2 and message in result.output
