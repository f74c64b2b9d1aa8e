"""What a decision is keyed by: the call (operation, geometry, dtype, threads, candidates)
and the environment it was measured in (the machine and every relevant version).

A decision measured on one machine with one set of libraries says nothing about another, so
the wisdom file keeps decisions per environment (:func:`environment`): the CPU (model, usable
cores, a hash of its ISA flags) and the versions of Python, convkit, numpy, numba and the BLAS
numpy runs on (threadpoolctl's view: library, version, threading layer and the kernels it
picked for this CPU). Each decision also records the versions of its candidates'
distributions (:func:`candidate_versions`); a plugin upgrade makes its decisions stale.
The environment is computed once per process, lazily, at the first decision that needs it.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import threading

import numpy as np

from convkit.geometry import ConvGeometry
from convkit.workload import BACKEND_METHODS, Operation

Op = Operation
#: The operations, as the CLI and ``convkit.testing`` name them, and their backend methods.
METHODS: dict[Operation, str] = BACKEND_METHODS
OPS: dict[str, str] = {method: op for op, method in METHODS.items()}

_environment: dict | None = None
_environment_lock = threading.Lock()


def thread_count() -> int:
    """The threads a call runs on: numba's thread count when numba is imported (what
    ``numba.set_num_threads`` set, once its pool runs), at most the cores this process may
    use (its affinity mask); else those cores.

    Cheap (about a microsecond): threadpoolctl's ``threadpool_info()`` would cost
    milliseconds per call, so a BLAS-only ``threadpool_limits`` does not change the key.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    numba = sys.modules.get("numba")
    if numba is None:
        return cores
    parallel = sys.modules.get("numba.np.ufunc.parallel")
    if parallel is not None and getattr(parallel, "_is_initialized", False):
        threads = numba.get_num_threads()  # starting the pool would load OpenMP: not here
    else:
        threads = numba.config.NUMBA_NUM_THREADS
    return max(1, min(threads, cores))


def geometry_text(geom: ConvGeometry) -> str:
    """``geom`` as a short readable string, e.g.
    ``float32 n8 c64 o64 56x56 k3x3 s1x1 p1,1,1,1 d1x1 g1`` (padding top,bottom,left,right)."""
    (h, w), (kh, kw), (sh, sw), (dh, dw) = (geom.in_size, geom.kernel_size, geom.stride,
                                            geom.dilation)
    pad = ",".join(map(str, geom.padding))
    return (f"{geom.dtype.name} n{geom.batch} c{geom.in_channels} o{geom.out_channels} "
            f"{h}x{w} k{kh}x{kw} s{sh}x{sw} p{pad} d{dh}x{dw} g{geom.groups}")


def decision_key(op: str, geom: ConvGeometry, threads: int, candidates: tuple[str, ...]) -> str:
    """The wisdom file's key of one decision: operation, geometry, dtype, threads and the
    candidates it chose among, e.g.
    ``forward float32 n8 c64 o64 56x56 k3x3 s1x1 p1,1,1,1 d1x1 g1 t2 [im2col-strided,numba]``."""
    return f"{op} {geometry_text(geom)} t{threads} [{','.join(sorted(candidates))}]"


def environment() -> dict:
    """``{"id": ..., "machine": {...}, "versions": {...}}`` of this process; ``id`` is a
    short hash of the rest. Computed once (it reads /proc/cpuinfo and asks threadpoolctl)."""
    global _environment
    with _environment_lock:
        if _environment is None:
            body = {"machine": _machine(), "versions": _versions()}
            digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
            _environment = {"id": digest[:16], **body}
        return _environment


def forget_environment() -> None:
    """Compute the environment again at the next decision (tests; after an upgrade in place)."""
    global _environment
    with _environment_lock:
        _environment = None


def candidate_versions(names: tuple[str, ...]) -> dict[str, str]:
    """``{name: "distribution version"}`` of each candidate (``<runtime>`` for a backend
    registered with :func:`convkit.register_backend`)."""
    from convkit.machine import package_version
    from convkit.registry import backend_infos

    infos = {info.name: info for info in backend_infos()}
    found = {}
    for name in names:
        dist = infos[name].distribution if name in infos else "<unknown>"
        found[name] = f"{dist} {package_version(dist) or ''}".strip()
    return found


def _machine() -> dict:
    from convkit.machine import cpu_model, usable_cores

    return {"cpu": cpu_model(), "cores": usable_cores(), "isa": _isa_flags_hash(),
            "arch": platform.machine()}


def _isa_flags_hash() -> str:
    """A short hash of the CPU's feature flags (``/proc/cpuinfo``), or '' where unknown."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    flags = " ".join(sorted(value.split()))
                    return hashlib.sha256(flags.encode()).hexdigest()[:16]
    except OSError:
        pass
    return ""


def _versions() -> dict:
    import convkit
    from convkit.machine import blas_libraries, package_version

    blas = sorted(
        f"{b['library']} {b['version']} {b['threading']} {b['architecture']}"
        for b in blas_libraries()
    )
    return {"python": platform.python_version(), "convkit": convkit.__version__,
            "numpy": np.__version__, "numba": package_version("numba") or "", "blas": blas}
