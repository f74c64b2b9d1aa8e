"""The auto backend: what it chooses, when it measures, and that it is the default.

Speeds come from fake backends (``auto_fakes``) that sleep, never from real timings, so the
choices are deterministic. ``TUNE_MIN_FLOPS`` is lowered to 0 so tiny layers are measured.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from auto_fakes import FAST, SLOW, Fake, arrays, register, slow_and_fast

import convkit
from convkit import autotune
from convkit.autotune import candidates, rules, tuner
from convkit.errors import AutotuneWarning, UnsupportedConfigurationError
from convkit.precision import precision
from convkit.registry import DEFAULT_BACKEND, resolve_backend_name
from convkit.testing import check_backend

pytestmark = pytest.mark.usefixtures("measuring_auto")


def reference(x, w, **params):
    return convkit.conv2d(x, w, backend="naive", **params)


# ------------------------------------------------------------------ the default backend


def test_auto_is_the_default():
    assert DEFAULT_BACKEND == "auto"
    assert resolve_backend_name() == "auto"
    assert convkit.get_backend().name == "auto"


def test_convkit_backend_overrides_auto(monkeypatch):
    monkeypatch.setenv("CONVKIT_BACKEND", "im2col-strided")
    assert convkit.get_backend().name == "im2col-strided"
    with convkit.use_backend("numba"):
        assert convkit.get_backend().name == "numba"


def test_candidates_leave_out_naive_torch_and_auto():
    names = set(candidates.loaded_candidates(None))
    assert {"im2col-strided", "im2col-take", "numba"} <= names
    assert not names & {"naive", "torch", "auto"}


# --------------------------------------------------------------------------- choosing


def test_measures_once_picks_the_faster_and_the_tuning_call_is_correct():
    fakes = slow_and_fast()
    x, w = arrays()
    y = convkit.conv2d(x, w, padding=1)  # this call measures
    np.testing.assert_allclose(y, reference(x, w, padding=1), rtol=1e-12, atol=1e-12)
    measured = {name: fake.calls["forward"] for name, fake in fakes.items()}
    assert measured[SLOW] >= 2 and measured[FAST] >= 2
    explanation = autotune.explain(x.shape, w.shape, padding=1, dtype="float64")
    assert (explanation.backend, explanation.source) == (FAST, "tuned")
    assert set(explanation.times) == {SLOW, FAST}
    assert explanation.medians[SLOW] > explanation.medians[FAST]
    for _ in range(3):
        convkit.conv2d(x, w, padding=1)
    assert fakes[SLOW].calls["forward"] == measured[SLOW]  # decided: no more timing runs
    assert fakes[FAST].calls["forward"] == measured[FAST] + 3


def test_each_operation_and_geometry_is_its_own_decision():
    slow_and_fast()
    x, w = arrays()
    convkit.conv2d(x, w)
    assert autotune.explain(x.shape, w.shape, dtype="float64").source == "tuned"
    for explanation in (autotune.explain(x.shape, w.shape, dtype="float64", op="input-grad"),
                        autotune.explain(x.shape, w.shape, dtype="float64", padding=1),
                        autotune.explain(x.shape, w.shape, dtype="float32")):
        assert explanation.pending and explanation.source == "rule"


def test_a_clearly_losing_candidate_stops_early():
    slow_and_fast()
    x, w = arrays()
    explanation = autotune.explain(x.shape, w.shape, dtype="float64", tune=True)
    assert len(explanation.times[SLOW]) < tuner.MAX_ROUNDS
    assert "stopped after" in explanation.dropped[SLOW]


@pytest.mark.parametrize(("fast", "rule", "expected"), [
    ([1.0, 1.0, 1.02], [1.2, 1.2, 1.2], "fast"),  # every sample >5% under the rule's median
    ([0.8, 0.8, 1.5], [1.2, 1.2, 1.2], "fast"),  # one slow sample (a spell) cannot block it
    ([0.8, 1.15, 1.19], [1.2, 1.2, 1.2], "rule"),  # better median, two samples within noise
    ([1.0, 1.0, 1.0], [1.02, 1.02, 1.02], "rule"),  # within the margin
])
def test_the_rule_yields_only_to_a_margin_noise_cannot_flip(fast, rule, expected):
    m = tuner.Measurement(winner="rule", reason="", samples={"fast": fast, "rule": rule})
    tuner._decide(m, "rule")
    assert m.winner == expected


@pytest.mark.parametrize(("first", "rule", "expected"), [
    (1.01, 1.5, "first"),  # a near-tie goes to the earlier candidate
    (1.10, 1.5, "second"),  # beyond the margin: the fastest
    (1.05, 1.1, "second"),  # near, but not 5% under the rule's median, as the fastest is
])
def test_near_ties_among_the_others_go_to_the_earlier_candidate(first, rule, expected):
    samples = {"rule": [rule] * 3, "first": [first] * 3, "second": [1.0] * 3}
    m = tuner.Measurement(winner="rule", reason="", samples=samples)
    tuner._decide(m, "rule")
    assert m.winner == expected


def test_a_sample_is_the_last_of_calls_in_a_row():
    order: list[str] = []
    calls = {name: (lambda n=name: order.append(n)) for name in ("rule", "other")}
    tuner.measure(calls, "rule", "a layer")
    rounds = order[2:]  # after one warm-up call each
    assert len(rounds) % (2 * tuner.CALLS_PER_SAMPLE) == 0
    for start in range(0, len(rounds), tuner.CALLS_PER_SAMPLE):
        assert len(set(rounds[start:start + tuner.CALLS_PER_SAMPLE])) == 1


def test_a_failed_rule_choice_leaves_the_fastest():
    m = tuner.Measurement(winner="rule", reason="", samples={"a": [2.0], "b": [1.0]})
    tuner._decide(m, "rule")
    assert m.winner == "b" and "failed" in m.reason


def test_measuring_counts_no_compilation_and_says_so_on_stderr(monkeypatch, capsys):
    monkeypatch.setattr(tuner, "NOTICE_AFTER", 0.01)
    fakes = register(aa_compiling=Fake(), zz_other=Fake())
    first = {"done": False}
    original = fakes["aa-compiling"].forward

    def compile_then_run(x, w, geom):
        if not first["done"]:
            first["done"] = True
            import time
            time.sleep(0.3)  # the first call compiles
        return original(x, w, geom)

    fakes["aa-compiling"].forward = compile_then_run
    x, w = arrays()
    explanation = autotune.explain(x.shape, w.shape, dtype="float64", tune=True)
    assert explanation.warmup_seconds["aa-compiling"] >= 0.3
    assert max(explanation.times["aa-compiling"]) < 0.3  # never in a sample
    err = capsys.readouterr().err
    assert "'aa-compiling'" in err and "once" in err and len(err.splitlines()) == 1


# ------------------------------------------------------------------------- the rules


def test_rules_only_when_autotune_is_off(monkeypatch, tmp_path):
    monkeypatch.setenv("CONVKIT_AUTOTUNE", "off")
    fakes = slow_and_fast()
    x, w = arrays()
    convkit.conv2d(x, w)
    assert fakes[SLOW].calls["forward"] == 1 and fakes[FAST].calls["forward"] == 0
    explanation = autotune.explain(x.shape, w.shape, dtype="float64")
    assert (explanation.backend, explanation.source) == (SLOW, "rule")
    assert "CONVKIT_AUTOTUNE=off" in explanation.reason
    assert not (tmp_path / "cache").exists()  # nothing written


def test_calls_under_the_threshold_follow_the_rule(monkeypatch):
    monkeypatch.setattr(rules, "TUNE_MIN_FLOPS", 10**9)
    fakes = slow_and_fast()
    x, w = arrays()
    convkit.conv2d(x, w)
    assert fakes[FAST].calls["forward"] == 0
    assert "worth measuring" in autotune.explain(x.shape, w.shape, dtype="float64").reason


def test_an_unknown_autotune_value_is_an_error(monkeypatch):
    monkeypatch.setenv("CONVKIT_AUTOTUNE", "sometimes")
    with pytest.raises(ValueError, match="CONVKIT_AUTOTUNE"):
        convkit.conv2d(*arrays())


@pytest.mark.parametrize(("geometry", "expected"), [
    (dict(input_shape=(8, 64, 56, 56), weight_shape=(64, 64, 3, 3), padding=1), "numba"),
    (dict(input_shape=(8, 64, 56, 56), weight_shape=(128, 64, 3, 3), stride=2), "numba"),
    (dict(input_shape=(8, 128, 56, 56), weight_shape=(128, 1, 3, 3), groups=128), "numba"),
    (dict(input_shape=(32, 1, 28, 28), weight_shape=(32, 1, 5, 5)), "numba"),
    (dict(input_shape=(8, 128, 28, 28), weight_shape=(256, 128, 1, 1)), "im2col-strided"),
    (dict(input_shape=(2, 3, 224, 224), weight_shape=(64, 3, 7, 7), stride=2, padding=3),
     "im2col-strided"),
    (dict(input_shape=(8, 64, 28, 28), weight_shape=(64, 64, 5, 5)), "im2col-strided"),
])
def test_the_rule_on_the_layers_it_was_written_from(geometry, expected):
    geom = convkit.make_geometry(**geometry)
    assert rules.rule_choice(geom, ("im2col-strided", "im2col-take", "numba"))[0] == expected
    assert rules.rule_choice(geom, ("im2col-take",))[0] == "im2col-take"  # the fallback


# ------------------------------------------------------------------ candidates, policy


def test_a_candidate_that_raises_while_measuring_is_dropped_with_a_warning():
    register(aa_broken=Fake(fail=True), zz_fast=Fake())
    x, w = arrays()
    with pytest.warns(AutotuneWarning, match="aa-broken"):
        y = convkit.conv2d(x, w)
    np.testing.assert_allclose(y, reference(x, w), rtol=1e-12, atol=1e-12)
    explanation = autotune.explain(x.shape, w.shape, dtype="float64")
    assert explanation.backend == FAST and "raised" in explanation.dropped["aa-broken"]


def test_a_candidate_that_fails_to_load_is_dropped(make_distribution, monkeypatch):
    make_distribution("broken-dist", {"broken": "broken_module:Backend"},
                      {"broken_module": "raise ImportError('no such library')"})
    monkeypatch.setenv("CONVKIT_AUTO_CANDIDATES", "broken,im2col-strided,nonexistent")
    x, w = arrays()
    with pytest.warns(AutotuneWarning) as caught:
        y = convkit.conv2d(x, w)
    np.testing.assert_allclose(y, reference(x, w), rtol=1e-12, atol=1e-12)
    messages = " ".join(str(c.message) for c in caught)
    assert "'broken'" in messages and "no such library" in messages and "nonexistent" in messages
    assert autotune.explain(x.shape, w.shape, dtype="float64").candidates == ("im2col-strided",)


def test_set_candidates_rejects_unknown_names():
    with pytest.raises(ValueError, match="did-not-install"):
        autotune.set_candidates(["numba", "did-not-install"])
    with pytest.raises(ValueError):
        autotune.set_candidates([])


def test_an_inexact_candidate_runs_only_under_the_fast_policy():
    fakes = register(aa_exact=Fake(delay=0.05), zz_inexact=Fake(error_factor=4.0))
    x, w = arrays()
    convkit.conv2d(x, w)
    assert fakes["zz-inexact"].calls["forward"] == 0
    exact = autotune.explain(x.shape, w.shape, dtype="float64")
    assert exact.candidates == ("aa-exact",) and exact.backend == "aa-exact"
    assert convkit.get_backend("auto").capabilities.error_factor == 1.0
    with precision("fast"):
        convkit.conv2d(x, w)
        fast = autotune.explain(x.shape, w.shape, dtype="float64")
        assert convkit.get_backend("auto").capabilities.error_factor == 4.0
    assert (fast.backend, fast.source) == ("zz-inexact", "tuned")
    assert fakes["zz-inexact"].calls["forward"] >= 2


def test_capabilities_are_the_union_and_a_call_no_candidate_takes_is_refused():
    register(aa_single=Fake(dtypes=("float32",)), zz_double=Fake(dtypes=("float64",)))
    assert convkit.get_backend("auto").capabilities.dtypes == {"float32", "float64"}
    autotune.set_candidates(["aa-single"])
    with pytest.raises(UnsupportedConfigurationError, match="float64"):
        convkit.conv2d(*arrays())


def test_workspace_is_the_chosen_backends():
    autotune.set_candidates(["im2col-strided"])
    geom = convkit.make_geometry((4, 16, 32, 32), (16, 16, 3, 3), padding=1,
                                 dtype=np.float32)
    expected = convkit.get_backend("im2col-strided").workspace_bytes(geom, "forward")
    assert expected > 0
    assert convkit.get_backend("auto").workspace_bytes(geom, "forward") == expected


# ------------------------------------------------------------------ threads, conformance


def test_threads_measure_a_layer_once_and_all_get_correct_results():
    fakes = slow_and_fast()
    x, w = arrays()
    expected = reference(x, w)
    barrier, results, errors = threading.Barrier(8), [], []

    def work():
        try:
            barrier.wait(timeout=30)
            results.append(convkit.conv2d(x, w))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and len(results) == 8
    for y in results:
        np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    # One thread measured (warm-up + at most MAX_ROUNDS); the others waited and ran FAST.
    assert fakes[SLOW].calls["forward"] <= 1 + tuner.MAX_ROUNDS
    assert autotune.explain(x.shape, w.shape, dtype="float64").source == "tuned"


def test_conformance_suite_passes_through_auto():
    report = check_backend("auto")
    assert report.ok, report.summary()


def test_a_decided_call_costs_one_lookup(monkeypatch):
    from convkit.autotune.chooser import chooser

    autotune.set_candidates(["im2col-strided"])
    x, w = arrays()
    convkit.conv2d(x, w)
    looked_up = []
    original = chooser.choose
    monkeypatch.setattr(chooser, "choose", lambda *a: looked_up.append(a) or original(*a))
    convkit.conv2d(x, w)
    assert len(looked_up) == 1  # workspace_bytes's answer serves the run
