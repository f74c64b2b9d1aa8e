"""Measure the winograd backend's error as a multiple of the direct-sum bound.

    python benchmarks/winograd_error.py [--quick]

For each variant (F(2,3), F(4,3)), dtype and operation (all three) prints the
largest ``|winograd - exact float64| / bound`` over the conformance cases it supports, the
Winograd-shaped test cases and realistic layers (random normal data, 64-256 channels at
56x56, 28x28 and 14x14), where ``bound`` is :func:`convkit.testing.error_bound`
(``n * eps * sum(|terms|)``). The declared ``error_factor`` must exceed every figure.
Not an asv benchmark: a script (asv collects nothing from it).
"""

from __future__ import annotations

import argparse

import numpy as np

import convkit
from convkit.testing import (
    CONFORMANCE_CASES,
    WINOGRAD_CASES,
    ConvCase,
    error_bound,
    run_operation,
)
from convkit_backends.winograd import WinogradBackend

#: Realistic layers: (name, input shape, output channels), padding 1.
LAYERS = (("64x56x56", (2, 64, 56, 56), 64), ("128x28x28", (4, 128, 28, 28), 128),
          ("256x14x14", (8, 256, 14, 14), 256))
VARIANTS = (2, 4)
OPERATIONS = ("forward", "input-grad", "weight-grad")


def worst_ratio(name: str, case: ConvCase, op: str, dtype: str, seed: int = 0) -> float:
    """max ``|result - float64 reference| / error_bound`` of ``op`` on ``case``."""
    arrays = case.arrays(dtype, seed)
    wide = type(arrays)(*(a.astype(np.float64) for a in (arrays.x, arrays.weight,
                                                          arrays.grad_output)))
    reference = run_operation(op, wide, case, "numba")
    actual = run_operation(op, arrays, case, name).astype(np.float64)
    bound = error_bound(op, arrays, case, backend="numba")
    return float(np.max(np.abs(actual - reference) / bound))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the first layer")
    parser.add_argument("--seeds", type=int, default=10, help="data sets per small case")
    args = parser.parse_args()
    for tile in VARIANTS:
        convkit.register_backend(f"winograd-f{tile}", WinogradBackend(tile))
    caps = convkit.get_backend("winograd").capabilities
    small = [c for c in CONFORMANCE_CASES + WINOGRAD_CASES
             if caps.unsupported_reason(c.geometry()) is None]
    layers = [ConvCase(f"layer-{n}", s, (k, s[1], 3, 3), padding=1) for n, s, k in LAYERS]
    seeds = args.seeds
    groups = {"small cases": small, "layers": layers[:1] if args.quick else layers}
    print(f"{'variant':8} {'dtype':8} {'operation':11} " + " ".join(f"{g:>12}" for g in groups))
    for tile in VARIANTS:
        for dtype in ("float32", "float64"):
            for op in OPERATIONS:
                worst = [max(worst_ratio(f"winograd-f{tile}", c, op, dtype, seed)
                             for c in cases for seed in range(seeds if c in small else 1))
                         for cases in groups.values()]
                print(f"F({tile},3)   {dtype:8} {op:11} " + " ".join(f"{w:12.3f}" for w in worst),
                      flush=True)


if __name__ == "__main__":
    main()
