"""How much memory a call may use: read what the system has left, refuse what cannot fit.

A convolution whose buffers exceed the free memory would not fail cleanly on Linux: pages are
promised lazily (overcommit) and the machine swaps or the OOM killer strikes later. So the
core estimates a call's bytes first (output + the backend's workspace) and raises
:class:`~convkit.MemoryBudgetError` before allocating anything.
"""

from __future__ import annotations

import os
from pathlib import Path

from convkit.errors import MemoryBudgetError

#: Calls needing less than this many bytes are not checked: reading /proc costs ~15 µs,
#: and so small an allocation cannot thrash a machine.
CHECK_ABOVE = 64 * 2**20

_CGROUP_LIMITS = (  # (limit, usage) files of cgroup v2 and v1
    ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
    ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
)


def available_memory() -> int | None:
    """Bytes that can still be allocated without swapping, or None if unknown.

    ``MemAvailable`` from ``/proc/meminfo`` (else free physical pages), lowered to the
    headroom of the process's cgroup limit when there is one.
    """
    found = [b for b in (_meminfo_available(), *map(_cgroup_headroom, _CGROUP_LIMITS))
             if b is not None]
    if not found:
        found = [b for b in (_sysconf_available(),) if b is not None]
    return min(found) if found else None


def check_fits(needed: int, what: str, parts: dict[str, int]) -> None:
    """Raise :class:`MemoryBudgetError` if ``needed`` bytes exceed the available memory.

    ``what`` names the call; ``parts`` (name -> bytes) are listed in the message.
    """
    if needed < CHECK_ABOVE:
        return
    available = available_memory()
    if available is None or needed <= available:
        return
    detail = ", ".join(f"{name} {format_bytes(size)}" for name, size in parts.items() if size)
    raise MemoryBudgetError(
        f"{what} needs about {format_bytes(needed)} ({detail}) but only "
        f"{format_bytes(available)} of memory is available; use a smaller batch or input"
    )


def format_bytes(size: int) -> str:
    """``1536 -> '1.5 KiB'``."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    value, i = float(size), 0
    while value >= 1024 and i < len(units) - 1:
        value, i = value / 1024, i + 1
    return f"{value:.1f} {units[i]}"


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_headroom(files: tuple[str, str]) -> int | None:
    try:
        limit, usage = (Path(f).read_text().strip() for f in files)
        if limit == "max" or int(limit) >= 2**60:  # no limit
            return None
        return max(0, int(limit) - int(usage))
    except (OSError, ValueError):
        return None


def _sysconf_available() -> int | None:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None
