"""The reference backend: the definition of convolution, written as loops to be read.

One output pixel is the dot product of the kernel with the input window under it::

    y[n, o, i, j] = sum_{c, a, b} w[o, c, a, b] * xp[n, g*Cg + c, i*sh + a*dh, j*sw + b*dw]

where ``xp`` is the zero-padded input and ``g = o // (Cout/groups)`` the output's group.
The gradients scatter the same products back. Slow (a Python loop per output pixel); its
job is to be obviously right.
"""

from __future__ import annotations

import numpy as np

from convkit.backend import ConvBackend
from convkit.geometry import ConvGeometry
from convkit_backends._common import crop, pad
from convkit_backends._workspace import padded_bytes


class NaiveBackend(ConvBackend):
    """Python loops over (image, group, output row, output column)."""

    description = "the reference: loops over output pixels, written to be read"

    def forward(self, x: np.ndarray, weight: np.ndarray, geom: ConvGeometry) -> np.ndarray:
        xp = pad(x, geom)
        y = np.zeros(geom.output_shape, geom.dtype)
        for n, g, i, j in _positions(geom):
            win = _window(xp, n, g, i, j, geom)  # (Cg, kh, kw)
            oc = _group_out_channels(g, geom)
            y[n, oc, i, j] = np.tensordot(weight[oc], win, axes=3)
        return y

    def backward_input(
        self, grad_output: np.ndarray, weight: np.ndarray, geom: ConvGeometry
    ) -> np.ndarray:
        grad_xp = np.zeros((geom.batch, geom.in_channels, *geom.padded_size), geom.dtype)
        for n, g, i, j in _positions(geom):
            oc = _group_out_channels(g, geom)
            # d y[n, oc, i, j] / d window = weight[oc]; weighted by the incoming gradient.
            _window(grad_xp, n, g, i, j, geom)[...] += np.tensordot(
                grad_output[n, oc, i, j], weight[oc], axes=1
            )
        return np.ascontiguousarray(crop(grad_xp, geom))

    def backward_weight(
        self, x: np.ndarray, grad_output: np.ndarray, geom: ConvGeometry
    ) -> np.ndarray:
        xp = pad(x, geom)
        grad_w = np.zeros(geom.weight_shape, geom.dtype)
        for n, g, i, j in _positions(geom):
            oc = _group_out_channels(g, geom)
            win = _window(xp, n, g, i, j, geom)
            grad_w[oc] += np.multiply.outer(grad_output[n, oc, i, j], win)
        return grad_w

    def workspace_bytes(self, geom: ConvGeometry, method: str) -> int:
        return padded_bytes(geom, geom.batch)  # the padded input or its gradient


def _positions(geom: ConvGeometry):
    """Every (image, group, output row, output column)."""
    ho, wo = geom.out_size
    return np.ndindex(geom.batch, geom.groups, ho, wo)


def _group_out_channels(g: int, geom: ConvGeometry) -> slice:
    cog = geom.out_channels // geom.groups
    return slice(g * cog, (g + 1) * cog)


def _window(xp: np.ndarray, n: int, g: int, i: int, j: int, geom: ConvGeometry) -> np.ndarray:
    """The view ``(Cg, kh, kw)`` of padded image ``n``, group ``g``, under output ``(i, j)``."""
    cg = geom.in_channels // geom.groups
    (kh, kw), (sh, sw), (dh, dw) = geom.kernel_size, geom.stride, geom.dilation
    rows = slice(i * sh, i * sh + dh * (kh - 1) + 1, dh)
    cols = slice(j * sw, j * sw + dw * (kw - 1) + 1, dw)
    return xp[n, g * cg:(g + 1) * cg, rows, cols]
