"""The convolution layers of real networks, as benchmark suites with a count per layer.

Each network is its public architecture definition reduced to its convolutions, in the
order they run, at a user-chosen batch size and image size (the published networks use
224 x 224). Layers with the same geometry are one case with the number of times they
occur, so ``convkit bench --suite resnet50`` times each distinct layer once and weighs it
by its count in the network's totals. Fully connected layers, pooling and normalisation are
not convolutions and are left out; ConvNeXt's pointwise linear layers are 1x1 convolutions.

* ``resnet50``: ResNet-50 v1.5 (torchvision: the stride sits in the 3x3 convolution), 53
  convolutions including the four projection shortcuts.
* ``mobilenetv2``: MobileNetV2 (width 1.0): 52 convolutions, 17 of them depthwise 3x3.
* ``vgg16``: VGG-16's 13 convolutions, all 3x3.
* ``convnext-t``: ConvNeXt-T: the 4x4 stride-4 stem, 18 blocks of a 7x7 depthwise
  convolution and two pointwise layers, and three 2x2 stride-2 downsampling layers.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from convkit.workload import ConvCase

DEFAULT_BATCH = 1
DEFAULT_IMAGE_SIZE = 224


@dataclass(frozen=True)
class Layer:
    """One convolution of a network: ``c`` to ``o`` channels, a ``k`` x ``k`` kernel with
    stride ``s``, on an input of ``image_size / div`` pixels a side; ``depthwise`` means
    groups = channels; padding keeps the size for odd kernels, none for even ones."""

    c: int
    o: int
    div: int
    k: int
    s: int = 1
    depthwise: bool = False

    def case(self, prefix: str, batch: int, image_size: int) -> ConvCase:
        hw, padding = image_size // self.div, self.k // 2 if self.k % 2 else 0
        if hw < 1 or hw + 2 * padding < self.k:
            raise ValueError(
                f"image size {image_size} is too small for {prefix}: a {self.k}x{self.k} "
                f"layer at 1/{self.div} of it would see {hw}x{hw} pixels"
            )
        kind = f"dw{self.c}" if self.depthwise else f"{self.c}to{self.o}"
        stride = f"-s{self.s}" if self.s > 1 else ""
        name = f"{prefix}-{hw}-{self.k}x{self.k}-{kind}{stride}"
        groups = self.c if self.depthwise else 1
        return ConvCase.layer(name, batch, self.c, self.o, hw, self.k, stride=self.s,
                              padding=padding, groups=groups)


def _bottlenecks(c_in: int, width: int, blocks: int, div: int, stride: int) -> list[Layer]:
    """A ResNet-50 stage: ``blocks`` bottlenecks of ``width`` (output ``4 * width``)."""
    layers = [Layer(c_in, width, div, 1), Layer(width, width, div, 3, stride),
              Layer(width, 4 * width, div * stride, 1), Layer(c_in, 4 * width, div, 1, stride)]
    for _ in range(blocks - 1):
        layers += [Layer(4 * width, width, div * stride, 1),
                   Layer(width, width, div * stride, 3), Layer(width, 4 * width, div * stride, 1)]
    return layers


def _resnet50() -> list[Layer]:
    return [Layer(3, 64, 1, 7, 2), *_bottlenecks(64, 64, 3, 4, 1),
            *_bottlenecks(256, 128, 4, 4, 2), *_bottlenecks(512, 256, 6, 8, 2),
            *_bottlenecks(1024, 512, 3, 16, 2)]


def _mobilenetv2() -> list[Layer]:
    layers = [Layer(3, 32, 1, 3, 2)]
    c, div = 32, 2
    # (expansion t, output channels, repeats n, stride of the first) from the paper's table
    for t, out, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                         (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)):
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = c * t
            if t != 1:
                layers.append(Layer(c, hidden, div, 1))
            layers.append(Layer(hidden, hidden, div, 3, stride, depthwise=True))
            div *= stride
            layers.append(Layer(hidden, out, div, 1))
            c = out
    return [*layers, Layer(320, 1280, div, 1)]


def _vgg16() -> list[Layer]:
    layers, c = [], 3
    for div, widths in ((1, (64, 64)), (2, (128, 128)), (4, (256, 256, 256)),
                        (8, (512, 512, 512)), (16, (512, 512, 512))):
        for o in widths:
            layers.append(Layer(c, o, div, 3))
            c = o
    return layers


def _convnext_t() -> list[Layer]:
    layers = [Layer(3, 96, 1, 4, 4)]
    dims, depths = (96, 192, 384, 768), (3, 3, 9, 3)
    for stage, (dim, depth) in enumerate(zip(dims, depths, strict=True)):
        div = 4 * 2**stage
        if stage:
            layers.append(Layer(dims[stage - 1], dim, div // 2, 2, 2))
        for _ in range(depth):
            layers += [Layer(dim, dim, div, 7, depthwise=True), Layer(dim, 4 * dim, div, 1),
                       Layer(4 * dim, dim, div, 1)]
    return layers


NETWORKS = {"resnet50": _resnet50, "mobilenetv2": _mobilenetv2, "vgg16": _vgg16,
            "convnext-t": _convnext_t}
_PREFIXES = {"resnet50": "r50", "mobilenetv2": "mnv2", "vgg16": "vgg", "convnext-t": "cnx"}


def network_cases(
    network: str, batch: int = DEFAULT_BATCH, image_size: int = DEFAULT_IMAGE_SIZE
) -> list[tuple[ConvCase, int]]:
    """The distinct convolutions of ``network`` for ``batch`` images of ``image_size``
    pixels a side, each with the number of times it occurs, in the order they first run."""
    if network not in NETWORKS:
        raise ValueError(f"network must be one of {', '.join(NETWORKS)}, got {network!r}")
    if batch < 1 or image_size < 1:
        raise ValueError(f"batch and image size must be at least 1, got {batch}, {image_size}")
    counts = Counter(NETWORKS[network]())
    return [(layer.case(_PREFIXES[network], batch, image_size), count)
            for layer, count in counts.items()]
