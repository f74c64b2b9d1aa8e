"""What a run means for a user: the fastest backend per layer and operation, and a
network's total convolution time per backend.

Both are derived from the report's rows (``results``) and stored in the report beside them
(``summary``, ``totals``). Yardsticks such as ``torch`` are compared with but never named
the fastest: they are not a convkit backend a user can choose.
"""

from __future__ import annotations

from collections.abc import Sequence

#: Backends that are yardsticks, not choices.
YARDSTICKS = frozenset({"torch"})
#: The name under which totals give the sum of each layer's fastest backend.
FASTEST = "fastest per layer"


def fastest_per_row(results: Sequence[dict], default_backend: str) -> list[dict]:
    """Per case and operation (in the rows' order): the fastest ok convkit backend and its
    median, and how many times faster it is than the default backend and than torch, where
    they ran (``None`` where not)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in results:
        groups.setdefault((row["case"], row["op"]), []).append(row)
    summary = []
    for (case, op), rows in groups.items():
        ok = {r["backend"]: r["median_s"] for r in rows if r["status"] == "ok"}
        choices = {name: s for name, s in ok.items() if name not in YARDSTICKS}
        fastest = min(choices, key=choices.__getitem__) if choices else None
        best = choices.get(fastest) if fastest else None
        summary.append({
            "case": case, "op": op, "fastest": fastest, "median_s": best,
            "vs_default": _ratio(ok.get(default_backend), best),
            "vs_torch": _ratio(ok.get("torch"), best),
        })
    return summary


def _ratio(other: float | None, best: float | None) -> float | None:
    return other / best if other is not None and best else None


def network_totals(
    results: Sequence[dict], counts: dict[str, int], backends: Sequence[str]
) -> dict:
    """Seconds one network pass spends in convolutions, per backend and for the fastest
    backend of each layer: ``{"forward_s": {name: s}, "training_step_s": {name: s}}``.

    A forward pass is every layer's forward call, weighted by ``counts`` (case name ->
    occurrences); a training step adds both gradients. A backend missing an ok row the sum
    needs gets ``None``.
    """
    medians = {(r["case"], r["op"], r["backend"]): r["median_s"]
               for r in results if r["status"] == "ok"}
    for case, op in {(r["case"], r["op"]) for r in results}:
        fastest = [s for (c, o, name), s in medians.items()
                   if (c, o) == (case, op) and name not in YARDSTICKS]
        if fastest:
            medians[case, op, FASTEST] = min(fastest)
    totals = {}
    for key, ops in (("forward_s", ("forward",)),
                     ("training_step_s", ("forward", "input-grad", "weight-grad"))):
        totals[key] = {name: _weighted_sum(medians, counts, ops, name)
                       for name in [*backends, FASTEST]}
    return totals


def _weighted_sum(
    medians: dict[tuple[str, str, str], float], counts: dict[str, int], ops: Sequence[str],
    backend: str,
) -> float | None:
    total = 0.0
    for case, count in counts.items():
        for op in ops:
            seconds = medians.get((case, op, backend))
            if seconds is None:
                return None
            total += count * seconds
    return total
