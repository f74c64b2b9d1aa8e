"""``convkit tune`` (ahead of time, --show, --clear), and auto in ``convkit backends`` and
``convkit check``. Fake backends make the choices deterministic."""

from __future__ import annotations

import json

import pytest
from auto_fakes import FAST, slow_and_fast
from test_cli import run

from convkit import autotune
from convkit.autotune import rules

TINY = "name=tiny,c=3,o=4,hw=8,k=3"


pytestmark = pytest.mark.usefixtures("measuring_auto")


def test_tune_show_backends_and_clear():
    slow_and_fast()
    result = run("tune", "--case", TINY, "--op", "forward,weight-grad", "--no-progress")
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.stdout.splitlines()]
    assert [r[:4] for r in rows] == [["tiny", "forward", FAST, "tuned"],
                                     ["tiny", "weight-grad", FAST, "tuned"]]
    autotune.forget()  # as in a new process
    again = run("tune", "--case", TINY, "--op", "forward", "--no-progress")
    assert again.stdout.split()[:4] == ["tiny", "forward", FAST, "stored"]
    retuned = run("tune", "--case", TINY, "--op", "forward", "--retune", "--no-progress")
    assert retuned.stdout.split()[:4] == ["tiny", "forward", FAST, "tuned"]

    shown = run("tune", "--show")
    assert shown.exit_code == 0, shown.output
    assert f"-> {FAST} (medians: {FAST}" in shown.stdout  # fastest first
    assert "2 decisions for this environment" in shown.stdout

    listing = run("backends", "--format", "json")
    auto = next(e for e in json.loads(listing.stdout) if e["name"] == "auto")
    assert auto["default"] and auto["decisions"] == 2

    cleared = run("tune", "--clear")
    assert cleared.exit_code == 0 and "removed 2 decisions" in cleared.stdout
    assert "0 decisions for this environment" in run("tune", "--show").stdout


def test_tune_reports_rules_for_small_layers(monkeypatch):
    monkeypatch.setattr(rules, "TUNE_MIN_FLOPS", 10**12)
    slow_and_fast()
    result = run("tune", "--case", TINY, "--op", "forward", "--no-progress")
    assert result.stdout.split()[:4] == ["tiny", "forward", "aa-slow", "rule"]


def test_tune_refuses_when_measuring_is_off(monkeypatch):
    monkeypatch.setenv("CONVKIT_AUTOTUNE", "off")
    result = run("tune", "--case", TINY)
    assert result.exit_code == 1 and "CONVKIT_AUTOTUNE=off" in result.output


@pytest.mark.parametrize("args", [["--show", "--clear"], ["--show", "--case", TINY],
                                  ["--case", "c=3"], ["--op", "sideways"]])
def test_tune_usage_errors(args):
    result = run("tune", *args)
    assert result.exit_code == 2, result.output


def test_check_auto_passes():
    result = run("check", "auto", "--dtype", "float64")
    assert result.exit_code == 0, result.output
    assert "PASS" in result.stdout
