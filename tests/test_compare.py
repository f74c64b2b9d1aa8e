"""``convkit compare``: every row of two bench reports judged on its raw samples."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from click.testing import CliRunner

from convkit.bench import SCHEMA
from convkit.bench.compare import (
    compare_reports,
    smallest_p_value,
    to_json,
    to_markdown,
    to_text,
)
from convkit.cli import main

SETTINGS = {"dtype": "float32", "threads": 2, "min_time": 0.05, "repeats": 9, "passes": 3}


def _samples(median: float, n: int = 9, noise: float = 0.03, seed: int = 0) -> list[list[float]]:
    """``n`` samples around ``median`` (multiplicative noise up to ``noise``), in 3 passes."""
    rng = np.random.default_rng(seed)
    values = (median * (1 + noise * rng.uniform(-1, 1, n))).tolist()
    return [values[i::3] for i in range(3)]


def _report(rows: dict[tuple[str, str, str], list[list[float]] | None], cpu: str = "CPU A",
            **settings: object) -> dict:
    """A report with one row per (case, op, backend); samples of None make an error row."""
    results = []
    for (case, op, backend), samples in rows.items():
        ok = samples is not None
        flat = sorted(t for one_pass in samples or [] for t in one_pass)
        results.append({"case": case, "op": op, "backend": backend,
                        "status": "ok" if ok else "error", "samples": samples,
                        "median_s": flat[len(flat) // 2] if ok else None})
    return {"schema": SCHEMA, "settings": {**SETTINGS, **settings}, "machine": {"cpu": cpu},
            "results": results}


OLD = _report({
    ("big", "forward", "a"): _samples(2.0e-3, seed=1),
    ("big", "forward", "b"): _samples(4.0e-3, seed=2),
    ("small", "forward", "a"): _samples(0.2e-3, seed=3),
    ("tiny", "forward", "a"): _samples(0.1e-3, seed=4),
    ("few", "forward", "a"): [[1e-3, 1e-3]],
    ("broken", "forward", "a"): _samples(3.0e-3, seed=5),
    ("gone", "forward", "a"): _samples(3.0e-3, seed=6),
})
NEW = _report({
    ("big", "forward", "a"): _samples(2.5e-3, seed=7),  # 25% slower
    ("big", "forward", "b"): _samples(2.0e-3, seed=8),  # twice as fast
    ("small", "forward", "a"): _samples(0.1e-3, seed=9),  # twice as fast, well under 1 ms
    ("tiny", "forward", "a"): _samples(0.104e-3, seed=10),  # 4%: below the threshold
    ("few", "forward", "a"): [[2e-3, 2e-3]],
    ("broken", "forward", "a"): None,
})


def _verdicts(result) -> dict[str, str]:
    return {f"{r.case}/{r.backend}": r.verdict for r in result.rows}


def test_every_row_in_both_reports_gets_a_verdict():
    result = compare_reports(OLD, NEW)
    assert _verdicts(result) == {
        "big/a": "slower", "big/b": "faster", "small/a": "faster", "tiny/a": "no change",
        "few/a": "not judged", "broken/a": "not judged",
    }
    by_case = {r.case: r for r in result.rows if r.backend == "a"}
    assert by_case["big"].ratio == pytest.approx(1.25, rel=0.05)
    assert by_case["big"].p_value < 1e-3
    assert "2 and 2 samples cannot reach p < 0.05" in by_case["few"].reason
    assert by_case["broken"].reason == "error in NEW" and by_case["broken"].p_value is None
    assert result.summary() == "slower: 1, faster: 2, no change: 1, not judged: 2"


def test_a_report_compared_with_itself_has_no_change():
    result = compare_reports(OLD, OLD)
    assert {r.verdict for r in result.rows if r.reason is None} == {"no change"}
    assert not result.changed


def test_one_backend_made_slower_is_found_and_nothing_else():
    slower = copy.deepcopy(OLD)
    for row in slower["results"]:
        if row["backend"] == "b" and row["samples"]:
            row["samples"] = [[t * 1.25 for t in p] for p in row["samples"]]
            row["median_s"] *= 1.25
    verdicts = _verdicts(compare_reports(OLD, slower))
    assert verdicts.pop("big/b") == "slower"
    assert set(verdicts.values()) <= {"no change", "not judged"}


def test_noise_as_large_as_the_shift_is_no_change():
    noisy_old = _report({("n", "forward", "a"): _samples(1e-3, noise=0.5, seed=11)})
    noisy_new = _report({("n", "forward", "a"): _samples(1.12e-3, noise=0.5, seed=12)})
    (row,) = compare_reports(noisy_old, noisy_new).rows
    assert row.verdict == "no change" and row.p_value > 0.01


def test_smallest_p_value_is_complete_separation():
    assert smallest_p_value(3, 3) == pytest.approx(0.1)
    assert smallest_p_value(9, 9) == pytest.approx(2 / 48620)
    assert smallest_p_value(0, 9) == 1.0


def test_reports_without_samples_are_listed_not_judged():
    old = copy.deepcopy(OLD)
    old["schema"] = "convkit-bench/1"
    for row in old["results"]:
        row.pop("samples")
    result = compare_reports(old, NEW)
    ok_both = [r for r in result.rows if r.case != "broken"]
    assert {r.verdict for r in result.rows} == {"not judged"}
    assert all("convkit-bench/1" in r.reason for r in ok_both)


def test_formats():
    result = compare_reports(OLD, NEW)
    lines = to_text(result).splitlines()
    assert lines[0].split() == ["case", "op", "backend", "old", "new", "new/old", "p",
                                "verdict"]
    assert lines[1].endswith("slower")
    assert lines[-1] == "slower: 1, faster: 2, no change: 1, not judged: 2"
    data = json.loads(to_json(result))
    assert set(data["rows"][0]) == {"case", "op", "backend", "old_s", "new_s", "ratio",
                                    "p_value", "verdict", "reason"}
    assert data["counts"] == {"slower": 1, "faster": 2, "no change": 1, "not judged": 2}
    markdown = to_markdown(result).splitlines()
    assert markdown[0] == "| case | op | backend | old | new | new/old | p | verdict |"
    assert markdown[2].startswith("| big | forward | a |")


def test_different_settings_or_machines_are_warned_about():
    other = _report({("big", "forward", "a"): _samples(2e-3)}, cpu="CPU B", threads=1)
    result = compare_reports(OLD, other)
    assert result.warnings == ["settings differ: threads 2 vs 1",
                               "machines differ: 'CPU A' vs 'CPU B'"]
    assert to_text(result).startswith("warning: settings differ: threads 2 vs 1\n")
    assert compare_reports(OLD, NEW).warnings == []


@pytest.mark.parametrize(("threshold", "alpha", "name"),
                         [(0.0, 0.01, "threshold"), (0.1, 1.0, "alpha"), (0.1, 0.0, "alpha")])
def test_bad_limits_are_rejected(threshold, alpha, name):
    with pytest.raises(ValueError, match=name):
        compare_reports(OLD, NEW, threshold=threshold, alpha=alpha)


def _write(tmp_path, name: str, content: object) -> str:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def test_cli_compares_two_files_and_can_fail_on_a_change(tmp_path):
    old, new = _write(tmp_path, "old.json", OLD), _write(tmp_path, "new.json", NEW)
    result = CliRunner().invoke(main, ["compare", old, new])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "slower: 1, faster: 2, no change: 1, not judged: 2"
    failing = CliRunner().invoke(main, ["compare", "--fail-on-change", old, new])
    assert failing.exit_code == 1
    relaxed = CliRunner().invoke(main, ["compare", "--fail-on-change", "--threshold", "1.5",
                                        old, new])
    assert relaxed.exit_code == 0, relaxed.output
    same = CliRunner().invoke(main, ["compare", "--fail-on-change", old, old])
    assert same.exit_code == 0, same.output
    as_json = CliRunner().invoke(main, ["compare", "--format", "json", old, new])
    assert json.loads(as_json.output)["counts"]["slower"] == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [("{not json", "is not JSON"), ({"schema": "other"}, "is not a report of `convkit bench"),
     ([1, 2], "is not a report of `convkit bench")],
)
def test_cli_rejects_files_that_are_not_reports(tmp_path, content, message):
    good = _write(tmp_path, "good.json", OLD)
    bad = _write(tmp_path, "bad.json", content)
    result = CliRunner().invoke(main, ["compare", good, bad])
    assert result.exit_code == 2
    assert "Invalid value for NEW" in result.output and message in result.output


def test_reports_of_convkit_bench_compare_row_by_row():
    from convkit.bench import BenchSettings, run_benchmark
    from convkit.cases import parse_case

    settings = BenchSettings(ops=("forward",), threads=1, min_time=1e-3, repeats=6, passes=2)
    report = run_benchmark([parse_case("name=tiny,n=1,c=2,o=3,hw=6,k=3")],
                           ["naive", "im2col-take"], settings, isolate=False)
    result = compare_reports(report, report)
    assert [r.backend for r in result.rows] == ["naive", "im2col-take"]
    assert [r.verdict for r in result.rows] == ["no change", "no change"]
    assert all(r.ratio == 1 for r in result.rows) and result.warnings == []
