"""Shared set-up for the asv suite: which backends and cases, and one ready-to-run workload.

Parameter lists versus the installed commit. asv imports this suite from the checkout that
holds ``asv.conf.json`` and runs it against every commit it builds, and it picks a parameter
combination by its *index* into the lists below. So the lists must not depend on the
installed commit (a commit that adds a case or a backend would shift every index and put
results under the wrong names). They are read from the checkout instead: the backend names
from ``pyproject.toml``'s entry points, the case names from ``convkit/suites.py`` (the same
specs ``convkit bench`` uses; plain data, so reading it needs no convkit). New backends and
cases go at the end of their lists, so earlier indices keep their names. What a name
*means* is the installed commit's business: :class:`Workload` looks the case up in the
installed ``convkit.cases`` and the backend in the installed registry, and a commit that
lacks either is skipped (``NotImplementedError``). The suite needs a commit that has
``convkit.workload`` (the shared vocabulary).
"""

from __future__ import annotations

import runpy
import time
from pathlib import Path

import tomllib

from convkit import BackendUnavailableError, get_backend, list_backends
from convkit.workload import OPERATIONS, ConvCase, run_operation

REPO_ROOT = Path(__file__).resolve().parent.parent

#: Every array is float32, the dtype networks train in.
DTYPE = "float32"

#: The naive backend runs a Python loop iteration per (image, group, output row, output
#: column), about 13 µs each here, plus a small BLAS call per iteration. These limits keep one
#: call under about 0.3 s: they leave out depthwise28-3x3 of the quick suite (200 704
#: iterations, 2 s a call) and every layer of the standard suite.
NAIVE_MAX_POSITIONS = 20_000
NAIVE_MAX_FLOPS = 100e6


def _checkout_backends() -> tuple[str, ...]:
    """The built-in backends, named by the checkout's ``pyproject.toml`` (in file order).

    Not the ``torch`` reference backend: it times PyTorch, whose speed no convkit commit
    changes, and asv's environments do not install torch.
    """
    with open(REPO_ROOT / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    return tuple(name for name in project["entry-points"]["convkit.backends"] if name != "torch")


def _checkout_suites() -> dict[str, tuple[str, ...]]:
    """Case names per suite, from the checkout's ``convkit/suites.py``: ``{"quick": (...)}``."""
    suites = runpy.run_path(str(REPO_ROOT / "convkit" / "suites.py"))["SUITES"]
    return {suite: tuple(_spec_name(spec) for spec in specs) for suite, specs in suites.items()}


def _spec_name(spec: str) -> str:
    """The ``name=`` of a suite's case spec (every suite case has one)."""
    fields = dict(item.split("=", 1) for item in spec.split(","))
    return fields["name"]


BACKENDS: tuple[str, ...] = _checkout_backends()
SUITE_CASES: dict[str, tuple[str, ...]] = _checkout_suites()
OPERATION_NAMES: tuple[str, ...] = tuple(OPERATIONS)  # the functional API's three calls


class Workload:
    """One operation of one suite case on one backend, ready to call.

    The constructor allocates the arrays (``x: (N, C, H, W)``, ``weight: (Cout, C/groups,
    kh, kw)``, ``grad_output: (N, Cout, Ho, Wo)``, float32) and calls the operation once, so
    the backend is imported, numba's kernels are compiled (or loaded from numba's cache) and
    im2col-take's index cache is filled before anything is measured. It raises
    ``NotImplementedError``, which asv reports as a skip, for a combination that cannot run:
    a backend or case the installed commit does not have, a case the backend does not
    support, or the naive backend on a layer too large for its loops.
    """

    def __init__(self, backend: str, suite: str, case: str, operation: str) -> None:
        if backend not in list_backends():
            raise NotImplementedError(f"this commit has no backend {backend!r}")
        bench_case = _installed_case(suite, case)
        geom = bench_case.geometry(DTYPE)
        try:
            capabilities = get_backend(backend).capabilities
        except BackendUnavailableError as exc:
            raise NotImplementedError(str(exc)) from None
        reason = capabilities.unsupported_reason(geom)
        if reason is not None:
            raise NotImplementedError(f"{backend}: {reason}")
        positions = geom.batch * geom.groups * geom.out_size[0] * geom.out_size[1]
        if backend == "naive" and (
            positions > NAIVE_MAX_POSITIONS or geom.flops > NAIVE_MAX_FLOPS
        ):
            raise NotImplementedError(
                f"naive on {case}: {positions} loop iterations and {geom.flops:.3g} flops, "
                f"limits {NAIVE_MAX_POSITIONS} and {NAIVE_MAX_FLOPS:.3g}"
            )
        self.backend = backend
        self.operation = operation
        self.flops = geom.flops
        """Floating-point operations of one call (each gradient costs as much as forward)."""
        self._case = bench_case
        self._arrays = self._case.arrays(DTYPE)
        self.run()

    def run(self) -> None:
        """Call the operation through the public functional API, as a user does."""
        run_operation(self.operation, self._arrays, self._case, self.backend)  # type: ignore[arg-type]

    def gflops(self, min_calls: int = 5, budget: float = 0.25) -> float:
        """Throughput in GFLOP/s from the fastest of at least ``min_calls`` calls.

        Calls repeat until ``min_calls`` are done and ``budget`` seconds have passed. Other
        load on the machine only ever slows a call down, so the fastest is the steadiest
        figure (asv compares a ``track_`` value without any statistics).
        """
        best = float("inf")
        calls, start = 0, time.perf_counter()
        while calls < min_calls or time.perf_counter() - start < budget:
            t0 = time.perf_counter()
            self.run()
            best = min(best, time.perf_counter() - t0)
            calls += 1
        return float(f"{self.flops / best / 1e9:.4g}")  # more digits would be noise


def _installed_case(suite: str, case: str) -> ConvCase:
    """The installed commit's definition of ``case`` in ``suite`` (NotImplementedError if none)."""
    try:
        from convkit.cases import SUITES
    except ImportError:
        raise NotImplementedError("this commit has no convkit.cases") from None
    for bench_case in SUITES.get(suite, ()):
        if bench_case.name == case:
            return bench_case
    raise NotImplementedError(f"this commit's {suite!r} suite has no case {case!r}")


def warm_numba_cache() -> None:
    """Compile each numba kernel once (float32) so later processes load it from numba's cache.

    numba caches compiled kernels on disk (``cache=True``; ``NUMBA_CACHE_DIR`` if set). Called
    from a ``setup_cache``, which asv runs in its own process before the benchmarks.
    """
    if "numba" not in list_backends():
        return
    tiny = ConvCase("warm-up", (1, 2, 5, 5), (2, 2, 3, 3), padding=1)
    arrays = tiny.arrays(DTYPE)
    for operation in OPERATIONS:
        run_operation(operation, arrays, tiny, "numba")
