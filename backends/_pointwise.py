"""1x1 convolutions with stride 1 and no padding are plain matrix products: no columns.

Each image ``x[n]: (C, H*W)`` is already the column matrix of an im2col, so the GEMMs run on
the input as it is and land in NCHW order: no column copy, no transpose, no column budget.
Groups are a batch dimension of the matmul.
"""

from __future__ import annotations

import numpy as np

from convkit.geometry import ConvGeometry
from convkit_backends._common import grouped_weight, per_group


def is_pointwise(geom: ConvGeometry) -> bool:
    """True when ``geom`` is a 1x1 kernel with stride 1 and no padding."""
    return geom.kernel_size == (1, 1) and geom.stride == (1, 1) and not any(geom.padding)


def forward(x: np.ndarray, weight: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    """``x: (N, C, H, W)``, ``weight: (Cout, C/G, 1, 1)`` -> ``y: (N, Cout, H, W)``."""
    y = np.matmul(grouped_weight(weight, geom), per_group(x, geom))  # (N, G, Cog, P)
    return y.reshape(geom.output_shape)


def backward_input(grad_output: np.ndarray, weight: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    """``grad_output: (N, Cout, H, W)`` -> ``grad_x: (N, C, H, W)``."""
    w_t = grouped_weight(weight, geom).transpose(0, 2, 1)  # (G, Cg, Cog)
    return np.matmul(w_t, per_group(grad_output, geom)).reshape(geom.input_shape)


def backward_weight(x: np.ndarray, grad_output: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    """``x: (N, C, H, W)``, ``grad_output: (N, Cout, H, W)`` -> ``(Cout, C/G, 1, 1)``."""
    cog, cg = geom.out_channels // geom.groups, geom.weight_shape[1]
    grad_w = np.zeros((geom.groups, cog, cg), geom.dtype)
    for x_n, grad_y_n in zip(per_group(x, geom), per_group(grad_output, geom), strict=True):
        grad_w += np.matmul(grad_y_n, x_n.transpose(0, 2, 1))  # (G, Cog, Cg)
    return grad_w.reshape(geom.weight_shape)

