"""Plain-text output shared by the command line and the harness: one table renderer and the
units times and sizes are written in."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from convkit import memory


def format_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], right: Collection[str] = ()
) -> list[str]:
    """``header`` and ``rows`` as lines of aligned columns two spaces apart.

    Columns named in ``right`` are right-aligned (numbers), the others left-aligned;
    trailing spaces are dropped.
    """
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]
    lines = []
    for line in [header, *rows]:
        cells = [
            value.rjust(width) if name in right else value.ljust(width)
            for name, value, width in zip(header, line, widths, strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def format_seconds(seconds: float | None) -> str:
    """``seconds`` with a unit that keeps 3-4 significant digits, e.g. ``'1.23 ms'``;
    ``'-'`` for None."""
    if seconds is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            value = seconds / scale
            return f"{value:.3g} {unit}" if value < 100 else f"{value:.0f} {unit}"
    return f"{seconds * 1e9:.0f} ns"


def format_bytes(size: int | None) -> str:
    """``size`` as :func:`convkit.memory.format_bytes` writes it, whole bytes below 1 KiB;
    ``'n/a'`` for None (not measurable)."""
    if size is None:
        return "n/a"
    return f"{size} B" if size < 1024 else memory.format_bytes(size)
