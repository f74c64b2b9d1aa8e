"""Real networks' convolutions as suites, and what a run says about them."""

from __future__ import annotations

import pytest

from convkit.bench.summary import FASTEST, fastest_per_row, network_totals
from convkit.networks import NETWORKS, network_cases

# Published multiply-accumulate counts of the convolutions at 224 x 224 (GMAC), and the
# number of convolution layers.
PUBLISHED = {"resnet50": (4.09, 53), "mobilenetv2": (0.30, 52), "vgg16": (15.35, 13),
             "convnext-t": (4.45, 58)}


@pytest.mark.parametrize("network", sorted(NETWORKS))
def test_networks_have_their_published_size(network):
    layers = network_cases(network)
    gmac, convolutions = PUBLISHED[network]
    assert sum(count for _, count in layers) == convolutions
    flops = sum(count * case.geometry().flops for case, count in layers)
    assert flops / 2e9 == pytest.approx(gmac, rel=0.01)
    names = [case.name for case, _ in layers]
    assert len(names) == len(set(names))


def test_batch_and_image_size_scale_the_layers():
    (stem, _), *_ = network_cases("resnet50", batch=4, image_size=112)
    assert stem.input_shape == (4, 3, 112, 112) and stem.weight_shape == (64, 3, 7, 7)
    assert stem.stride == 2 and stem.padding == 3
    depthwise = [case for case, _ in network_cases("mobilenetv2") if case.groups > 1]
    assert all(case.weight_shape[1] == 1 for case in depthwise) and len(depthwise) == 10


def test_unknown_network_and_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="network must be one of"):
        network_cases("alexnet")
    with pytest.raises(ValueError, match="at least 1"):
        network_cases("vgg16", batch=0)


def _row(case, op, backend, median, status="ok"):
    return {"case": case, "op": op, "backend": backend, "median_s": median, "status": status}


def test_fastest_is_a_convkit_backend_compared_with_default_and_torch():
    results = [_row("a", "forward", "slow", 4.0), _row("a", "forward", "quick", 1.0),
               _row("a", "forward", "torch", 0.5), _row("b", "forward", "slow", 2.0),
               _row("b", "forward", "quick", None, "error")]
    (a, b) = fastest_per_row(results, default_backend="slow")
    assert (a["fastest"], a["median_s"], a["vs_default"], a["vs_torch"]) == ("quick", 1.0,
                                                                            4.0, 0.5)
    assert (b["fastest"], b["vs_default"], b["vs_torch"]) == ("slow", 1.0, None)


def test_totals_weigh_each_layer_by_its_count():
    # x is faster on layer a, y on layer b; every op of a layer takes the same time here.
    medians = {("a", "x"): 1.0, ("a", "y"): 2.0, ("b", "x"): 10.0, ("b", "y"): 5.0}
    results = [_row(case, op, backend, median) for (case, backend), median in medians.items()
               for op in ("forward", "input-grad", "weight-grad")]
    totals = network_totals(results, {"a": 2, "b": 3}, ["x", "y"])
    assert totals["forward_s"] == {"x": 2 * 1 + 3 * 10, "y": 2 * 2 + 3 * 5,
                                   FASTEST: 2 * 1 + 3 * 5}
    assert totals["training_step_s"]["x"] == 3 * (2 * 1 + 3 * 10)
    missing = [r for r in results if not (r["backend"] == "y" and r["case"] == "a")]
    assert network_totals(missing, {"a": 2, "b": 3}, ["x", "y"])["forward_s"]["y"] is None
