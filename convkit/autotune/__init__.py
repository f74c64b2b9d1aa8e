"""``auto``: the fastest backend per layer, measured once per machine and remembered.

The ``auto`` backend (:mod:`convkit_backends.auto`, the default) hands each call to one of
its candidates, chosen per operation x geometry (shapes, stride, padding, dilation, groups,
dtype) x thread count:

* calls too small to be worth measuring, and every call under ``CONVKIT_AUTOTUNE=off``,
  follow a documented rule (:mod:`~convkit.autotune.rules`);
* the first call of a larger layer measures the candidates on its own arrays
  (:mod:`~convkit.autotune.tuner`) and returns a correct result;
* the decision goes into a wisdom file (:mod:`~convkit.autotune.store`) keyed by the
  machine and the versions of everything that could change it
  (:mod:`~convkit.autotune.keys`), which later processes read instead of measuring.

Unlike every other backend, auto reads environment variables (``CONVKIT_AUTOTUNE``,
``CONVKIT_CACHE_DIR``, ``CONVKIT_AUTO_CANDIDATES``); all of that happens in
:mod:`~convkit.autotune.settings`. See ``docs/auto.md``.

This module is the Python API: :func:`explain` says what auto would run for a call and why,
and with ``tune=True`` measures it ahead of time (:func:`tune_geometry` for a harness
holding a :class:`~convkit.ConvGeometry`); :func:`stored_decisions` and :func:`clear` read
and empty the wisdom file; :func:`set_candidates` narrows the candidates.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from convkit.geometry import ConvGeometry, IntPair, Padding, make_geometry

from . import keys
from .chooser import Explanation, chooser
from .keys import METHODS, Op
from .settings import (
    AUTOTUNE_ENV,
    CACHE_DIR_ENV,
    CANDIDATES_ENV,
    autotune_enabled,
    set_candidates,
)

__all__ = [
    "AUTOTUNE_ENV",
    "CACHE_DIR_ENV",
    "CANDIDATES_ENV",
    "Explanation",
    "autotune_enabled",
    "cache_path",
    "clear",
    "decision_count",
    "explain",
    "forget",
    "set_candidates",
    "stored_decisions",
    "tune_geometry",
]


def explain(
    input_shape: tuple[int, int, int, int],
    weight_shape: tuple[int, int, int, int],
    *,
    op: Op = "forward",
    stride: IntPair = 1,
    padding: Padding = 0,
    dilation: IntPair = 1,
    groups: int = 1,
    dtype: str | np.dtype = "float32",
    tune: bool = False,
) -> Explanation:
    """Which backend auto runs for this call, and why; measures only if ``tune``.

    input_shape: ``(N, C, H, W)``; weight_shape: ``(Cout, C / groups, kh, kw)``; the other
    parameters as in :func:`convkit.conv2d`; ``op`` is ``'forward'``, ``'input-grad'`` or
    ``'weight-grad'``. The answer's ``source`` is ``'rule'``, ``'stored'`` or ``'tuned'``;
    ``times`` holds the measured seconds. Without ``tune``, a layer not yet measured gets
    the rule's answer with ``pending=True``.
    """
    geom = make_geometry(input_shape, weight_shape, stride, padding, dilation, groups,
                         np.dtype(dtype), input_name="input_shape", weight_name="weight_shape")
    return tune_geometry(geom, op) if tune else _explanation(op, geom, None)


def tune_geometry(geom: ConvGeometry, op: Op = "forward", *, retune: bool = False
                  ) -> Explanation:
    """Measure ``op`` on ``geom`` with random operands now, unless decided already (or
    again, replacing the stored decision, if ``retune``).

    For harnesses: call it before timing ``auto`` so that tuning is not in the timings; its
    ``tuning_seconds`` (and ``warmup_seconds``, compilation included) are the cost.
    """
    if op not in METHODS:
        raise ValueError(f"op must be one of {tuple(METHODS)}, got {op!r}")
    rng = np.random.default_rng(0)
    shapes = {"forward": (geom.input_shape, geom.weight_shape),
              "input-grad": (geom.output_shape, geom.weight_shape),
              "weight-grad": (geom.input_shape, geom.output_shape)}[op]
    arrays = tuple(rng.standard_normal(s).astype(geom.dtype) for s in shapes)
    return _explanation(op, geom, arrays, retune)  # type: ignore[arg-type]


def _explanation(op: str, geom: ConvGeometry, arrays: tuple | None,
                 retune: bool = False) -> Explanation:
    if op not in METHODS:
        raise ValueError(f"op must be one of {tuple(METHODS)}, got {op!r}")
    choice, _ = chooser.choose(op, geom, arrays, retune)
    return choice.explanation


def cache_path() -> Path:
    """The wisdom file in force (``CONVKIT_CACHE_DIR`` or the user cache directory)."""
    return chooser.store().path


def stored_decisions() -> dict:
    """The wisdom file's decisions measured in this environment, key -> entry (times in
    seconds), plus ``other_environments``: how many decisions other environments hold.

    Returned as ``{"path": ..., "environment": {...}, "decisions": {...},
    "other_environments": {id: count}}``.
    """
    document = chooser.store().document()
    env = keys.environment()
    sections = document["environments"]
    mine = sections.get(env["id"], {"decisions": {}})
    return {"path": str(cache_path()), "environment": env, "decisions": mine["decisions"],
            "other_environments": {i: len(s["decisions"]) for i, s in sections.items()
                                   if i != env["id"]}}


def decision_count() -> int:
    """How many decisions the wisdom file holds for this environment (no measuring)."""
    return len(stored_decisions()["decisions"])


def clear() -> int:
    """Delete the wisdom file and this process's memo; returns how many decisions the file
    held (all environments). Raises OSError if the file cannot be deleted."""
    count = chooser.store().clear()
    chooser.forget()
    return count


def forget() -> None:
    """Forget this process's decisions (the wisdom file is read again on the next call)."""
    chooser.forget()

