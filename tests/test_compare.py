"""``convkit compare``: two bench reports side by side."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from convkit.bench import SCHEMA
from convkit.bench.compare import compare_reports, to_text
from convkit.cli import main

SETTINGS = {"dtype": "float32", "threads": 2, "min_time": 0.05, "repeats": 7, "passes": 3}


def _report(medians: dict[tuple[str, str, str], float | None], cpu: str = "CPU A",
            **settings: object) -> dict:
    """A report with one row per (case, op, backend); a median of None is an error row."""
    results = [
        {"case": case, "op": op, "backend": backend,
         "status": "ok" if median is not None else "error", "median_s": median}
        for (case, op, backend), median in medians.items()
    ]
    return {"schema": SCHEMA, "settings": {**SETTINGS, **settings}, "machine": {"cpu": cpu},
            "results": results}


OLD = _report({
    ("big", "forward", "a"): 2.0e-3,
    ("big", "forward", "b"): 4.0e-3,
    ("small", "forward", "a"): 0.2e-3,
    ("broken", "forward", "a"): 3.0e-3,
    ("gone", "forward", "a"): 3.0e-3,
})
NEW = _report({
    ("big", "forward", "a"): 2.2e-3,  # 10% slower
    ("big", "forward", "b"): 2.0e-3,  # twice as fast
    ("small", "forward", "a"): 0.1e-3,  # twice as fast, but under 1 ms
    ("broken", "forward", "a"): None,
})


def test_rows_ok_in_both_reports_are_compared_symmetrically():
    result = compare_reports(OLD, NEW)
    assert [(r.case, r.backend) for r in result.rows] == [("big", "a"), ("big", "b"),
                                                          ("small", "a")]
    slower, faster, _ = result.rows
    assert slower.ratio == pytest.approx(1.1) and slower.difference == pytest.approx(0.1)
    assert faster.ratio == pytest.approx(0.5) and faster.difference == pytest.approx(1.0)
    swapped = compare_reports(NEW, OLD)
    assert [r.difference for r in swapped.rows] == pytest.approx(
        [r.difference for r in result.rows])


def test_short_rows_are_listed_but_not_judged():
    result = compare_reports(OLD, NEW)
    assert [r.case for r in result.judged] == ["big", "big"]
    assert [r.backend for r in result.changed] == ["b"]
    assert result.summary() == ("rows of 1 ms or more: 2, within 15%: 1, "
                                "largest difference 100.0%")
    strict = compare_reports(OLD, NEW, threshold=0.05, min_seconds=0.0)
    assert len(strict.judged) == 3 and len(strict.changed) == 3


def test_text_marks_changes_and_ends_with_the_summary():
    lines = to_text(compare_reports(OLD, NEW)).splitlines()
    assert lines[0].split() == ["case", "op", "backend", "old", "new", "new/old", "difference"]
    assert lines[1].split()[-1] == "10.0%"
    assert lines[2].endswith("100.0% *")
    assert lines[3].endswith("(under 1 ms)")
    assert lines[-1].startswith("rows of 1 ms or more: 2")


def test_different_settings_or_machines_are_warned_about():
    other = _report({("big", "forward", "a"): 2.0e-3}, cpu="CPU B", threads=1)
    result = compare_reports(OLD, other)
    assert result.warnings == ["settings differ: threads 2 vs 1",
                               "machines differ: 'CPU A' vs 'CPU B'"]
    assert to_text(result).startswith("warning: settings differ: threads 2 vs 1\n")
    assert compare_reports(OLD, NEW).warnings == []


@pytest.mark.parametrize(("threshold", "min_seconds", "name"),
                         [(0.0, 1e-3, "threshold"), (0.1, -1.0, "min_seconds")])
def test_bad_limits_are_rejected(threshold, min_seconds, name):
    with pytest.raises(ValueError, match=name):
        compare_reports(OLD, NEW, threshold=threshold, min_seconds=min_seconds)


def _write(tmp_path, name: str, content: object) -> str:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def test_cli_compares_two_files_and_can_fail_on_a_change(tmp_path):
    old, new = _write(tmp_path, "old.json", OLD), _write(tmp_path, "new.json", NEW)
    result = CliRunner().invoke(main, ["compare", old, new])
    assert result.exit_code == 0, result.output
    assert "rows of 1 ms or more: 2, within 15%: 1" in result.output
    failing = CliRunner().invoke(main, ["compare", "--fail-on-change", old, new])
    assert failing.exit_code == 1
    relaxed = CliRunner().invoke(main, ["compare", "--fail-on-change", "--threshold", "1.5",
                                        old, new])
    assert relaxed.exit_code == 0, relaxed.output


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

    settings = BenchSettings(ops=("forward",), threads=1, min_time=1e-3, repeats=2, passes=2)
    report = run_benchmark([parse_case("name=tiny,n=1,c=2,o=3,hw=6,k=3")],
                           ["naive", "im2col-take"], settings, isolate=False)
    result = compare_reports(report, report)
    assert [r.backend for r in result.rows] == ["naive", "im2col-take"]
    assert all(r.difference == 0 for r in result.rows) and result.warnings == []
