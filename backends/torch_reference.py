"""PyTorch's own CPU convolution as a backend, to see how far the others are from it.

Forward is ``torch.nn.functional.conv2d``; the gradients are ``torch.nn.grad.conv2d_input``
and ``conv2d_weight`` (PyTorch's convolution backward kernels, as autograd would run them).
Arrays cross over without copies (``torch.from_numpy`` and ``Tensor.numpy``).

torch is imported with this module, so where it is missing the registry records the backend
as unavailable, with the import error as the reason. PyTorch takes one padding per axis;
convkit's four-sided padding (``'same'`` with an even kernel) is applied by padding the input
explicitly, and the input gradient of the padded input is cropped.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from convkit.backend import ConvBackend
from convkit.geometry import ConvGeometry


class TorchBackend(ConvBackend):
    """``torch.nn.functional.conv2d`` and ``torch.nn.grad``; torch's thread count applies."""

    description = "a yardstick: PyTorch's own CPU convolution"

    def forward(self, x: np.ndarray, weight: np.ndarray, geom: ConvGeometry) -> np.ndarray:
        padding, x_t = _torch_padding(geom, _tensor(x))
        with torch.no_grad():
            y = F.conv2d(x_t, _tensor(weight), None, geom.stride, padding, geom.dilation,
                         geom.groups)
        return y.numpy()

    def backward_input(
        self, grad_output: np.ndarray, weight: np.ndarray, geom: ConvGeometry
    ) -> np.ndarray:
        symmetric = _symmetric_padding(geom)
        shape = geom.input_shape if symmetric else (*geom.input_shape[:2], *geom.padded_size)
        grad_x = torch.nn.grad.conv2d_input(
            shape, _tensor(weight), _tensor(grad_output), geom.stride, symmetric or 0,
            geom.dilation, geom.groups,
        )
        if not symmetric:
            pt, _, pl, _ = geom.padding
            h, w = geom.in_size
            grad_x = grad_x[:, :, pt:pt + h, pl:pl + w].contiguous()
        return grad_x.numpy()

    def backward_weight(
        self, x: np.ndarray, grad_output: np.ndarray, geom: ConvGeometry
    ) -> np.ndarray:
        padding, x_t = _torch_padding(geom, _tensor(x))
        grad_w = torch.nn.grad.conv2d_weight(
            x_t, geom.weight_shape, _tensor(grad_output), geom.stride, padding, geom.dilation,
            geom.groups,
        )
        return grad_w.numpy()


def _tensor(a: np.ndarray) -> torch.Tensor:
    # from_numpy shares memory; it warns on a read-only array, so such an array is copied.
    return torch.from_numpy(a if a.flags.writeable else a.copy())


def _symmetric_padding(geom: ConvGeometry) -> tuple[int, int] | None:
    """``(ph, pw)`` if top == bottom and left == right, else None."""
    pt, pb, pl, pr = geom.padding
    return (pt, pl) if (pt, pl) == (pb, pr) else None


def _torch_padding(geom: ConvGeometry, x: torch.Tensor) -> tuple[tuple[int, int], torch.Tensor]:
    """The padding for torch's call, and ``x`` padded explicitly when it is asymmetric."""
    symmetric = _symmetric_padding(geom)
    if symmetric is not None:
        return symmetric, x
    pt, pb, pl, pr = geom.padding
    return (0, 0), F.pad(x, (pl, pr, pt, pb))
