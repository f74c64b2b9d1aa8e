"""An example convkit backend: ``np.einsum`` over a strided window view.

It shows the whole contract of a plugin in one page. The core hands each method validated
C-contiguous arrays of one dtype and a resolved :class:`convkit.ConvGeometry`; the method
returns a new array of the documented shape in ``geom.dtype``. This backend declares that
it does not support dilation, so convkit refuses dilated calls for it with an
``UnsupportedConfigurationError`` instead of ever calling it with one.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from convkit import Capabilities, ConvBackend, ConvGeometry

__all__ = ["EinsumBackend"]


class EinsumBackend(ConvBackend):
    """Groups, stride and padding by ``np.einsum``; no dilation (declared below)."""

    capabilities = Capabilities(dilation=False)

    def forward(self, x: np.ndarray, weight: np.ndarray, geom: ConvGeometry) -> np.ndarray:
        """``y[n, g, o, i, j] = sum_{c, a, b} w[g, o, c, a, b] * win[n, g, c, i, j, a, b]``.

        (``g, o`` index the output channel ``g * Cout/G + o``; ``c`` the group's channels.)
        """
        win = _windows(x, geom)  # (N, G, Cg, Ho, Wo, kh, kw)
        w = _grouped(weight, geom)  # (G, Cog, Cg, kh, kw)
        y = np.einsum("ngchwab,gocab->ngohw", win, w, optimize=True)
        return y.reshape(geom.output_shape)

    def backward_input(
        self, grad_output: np.ndarray, weight: np.ndarray, geom: ConvGeometry
    ) -> np.ndarray:
        """Each window's gradient ``gy . w``, added back onto the padded input, then cropped."""
        (kh, kw), (ho, wo), (sh, sw) = geom.kernel_size, geom.out_size, geom.stride
        grad_win = np.einsum(
            "ngohw,gocab->ngcabhw", _grouped_output(grad_output, geom), _grouped(weight, geom),
            optimize=True,
        ).reshape(geom.batch, geom.in_channels, kh, kw, ho, wo)
        grad_xp = np.zeros((geom.batch, geom.in_channels, *geom.padded_size), geom.dtype)
        for a in range(kh):
            for b in range(kw):
                grad_xp[:, :, a:a + sh * (ho - 1) + 1:sh, b:b + sw * (wo - 1) + 1:sw] += (
                    grad_win[:, :, a, b]
                )
        pt, _, pl, _ = geom.padding
        h, w = geom.in_size
        return np.ascontiguousarray(grad_xp[:, :, pt:pt + h, pl:pl + w])

    def backward_weight(
        self, x: np.ndarray, grad_output: np.ndarray, geom: ConvGeometry
    ) -> np.ndarray:
        """``grad_w[g*Cog + o, c, a, b] = sum_{n, i, j} gy[n, g*Cog + o, i, j] * win[...]``."""
        gy = _grouped_output(grad_output, geom)  # (N, G, Cog, Ho, Wo)
        grad_w = np.einsum("ngohw,ngchwab->gocab", gy, _windows(x, geom), optimize=True)
        return np.ascontiguousarray(grad_w.reshape(geom.weight_shape))


def _windows(x: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    """Read-only view ``(N, G, Cg, Ho, Wo, kh, kw)`` of every window of the padded input."""
    pt, pb, pl, pr = geom.padding
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    (sh, sw), (ho, wo) = geom.stride, geom.out_size
    win = sliding_window_view(xp, geom.kernel_size, axis=(2, 3))[:, :, ::sh, ::sw][:, :, :ho, :wo]
    return win.reshape(geom.batch, geom.groups, -1, ho, wo, *geom.kernel_size)


def _grouped(weight: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    """``(Cout, Cg, kh, kw)`` -> ``(G, Cout / G, Cg, kh, kw)`` (a view)."""
    return weight.reshape(geom.groups, geom.out_channels // geom.groups, *weight.shape[1:])


def _grouped_output(grad_output: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    """``(N, Cout, Ho, Wo)`` -> ``(N, G, Cout / G, Ho, Wo)`` (a view)."""
    n, _, ho, wo = grad_output.shape
    return grad_output.reshape(n, geom.groups, geom.out_channels // geom.groups, ho, wo)
