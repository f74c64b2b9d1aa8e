"""The shared vocabulary of convkit's tests, harness and asv suite: what one convolution to
run is, its data, how to run an operation of it, and how far two correct results may differ.

* :class:`ConvCase`: one convolution's shapes and parameters, no data (the suites of
  :mod:`convkit.cases`, the conformance cases of :mod:`convkit.testing`);
* :class:`ConvArrays`: its data, made deterministically from the case's name;
* :func:`run_operation`: ``'forward'``, ``'input-grad'`` or ``'weight-grad'`` through the
  public functional API;
* :func:`error_bound`: the elementwise rounding-error bound every comparison uses.

A sum of ``n`` terms computed in floating point is off by at most about
``n * eps * sum(|terms|)``, so two correct implementations differ by at most
``n * eps * magnitude``, where ``magnitude`` is the same operation applied to the absolute
values of its operands.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from convkit.functional import conv2d, conv2d_input_grad, conv2d_weight_grad
from convkit.geometry import ConvGeometry, IntPair, Padding, make_geometry

Operation = Literal["forward", "input-grad", "weight-grad"]
OPERATIONS: tuple[Operation, ...] = ("forward", "input-grad", "weight-grad")
#: The :class:`~convkit.ConvBackend` method that computes each operation.
BACKEND_METHODS: dict[Operation, str] = {
    "forward": "forward", "input-grad": "backward_input", "weight-grad": "backward_weight",
}
DTYPES: tuple[str, ...] = ("float32", "float64")


@dataclass(frozen=True)
class ConvCase:
    """One convolution: shapes and parameters, no data.

    input_shape: ``(N, C, H, W)``; weight_shape: ``(Cout, C / groups, kh, kw)``.
    ``noncontiguous`` makes the arrays strided views instead of fresh C-ordered arrays;
    ``source`` says where the case comes from (not part of its identity).
    """

    name: str
    input_shape: tuple[int, int, int, int]
    weight_shape: tuple[int, int, int, int]
    stride: IntPair = 1
    padding: Padding = 0
    dilation: IntPair = 1
    groups: int = 1
    noncontiguous: bool = False
    source: str = field(default="convkit", compare=False)

    @classmethod
    def layer(
        cls, name: str, n: int, c: int, o: int, hw: int, k: int, **options: object
    ) -> ConvCase:
        """A square layer: ``n`` images of ``c`` channels, ``hw`` x ``hw``, to ``o``
        channels with a ``k`` x ``k`` kernel; ``options`` as the dataclass fields."""
        groups = int(options.get("groups", 1))  # type: ignore[call-overload]
        return cls(name, (n, c, hw, hw), (o, c // groups, k, k), **options)  # type: ignore[arg-type]

    def __str__(self) -> str:
        return self.name

    @property
    def batch(self) -> int:
        return self.input_shape[0]

    @property
    def in_channels(self) -> int:
        return self.input_shape[1]

    @property
    def out_channels(self) -> int:
        return self.weight_shape[0]

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)`` of the input."""
        return self.input_shape[2], self.input_shape[3]

    @property
    def kernel(self) -> tuple[int, int]:
        """``(kh, kw)``."""
        return self.weight_shape[2], self.weight_shape[3]

    @property
    def params(self) -> dict:
        """Keyword arguments for conv2d and its gradients."""
        return {"stride": self.stride, "padding": self.padding, "dilation": self.dilation,
                "groups": self.groups}

    def geometry(self, dtype: str = "float64") -> ConvGeometry:
        """The validated geometry (raises ValueError for an impossible case)."""
        return make_geometry(self.input_shape, self.weight_shape, dtype=np.dtype(dtype),
                             **self.params)

    def arrays(self, dtype: str = "float64", seed: int = 0) -> ConvArrays:
        """Random ``x``, ``weight`` and ``grad_output`` for this case (deterministic per name)."""
        rng = np.random.default_rng([seed, *self.name.encode()])
        out_shape = self.geometry(dtype).output_shape
        make = _strided_normal if self.noncontiguous else _normal
        return ConvArrays(
            make(rng, self.input_shape, dtype),
            make(rng, self.weight_shape, dtype),
            make(rng, out_shape, dtype),
        )


@dataclass(frozen=True)
class ConvArrays:
    """The data of one case.

    x: ``(N, C, H, W)``; weight: ``(Cout, C/groups, kh, kw)``; grad_output: ``(N, Cout, Ho, Wo)``.
    """

    x: np.ndarray
    weight: np.ndarray
    grad_output: np.ndarray

    def astype(self, dtype: type | str) -> ConvArrays:
        """The same data converted to ``dtype`` (copies)."""
        return ConvArrays(*(np.asarray(a).astype(dtype)
                            for a in (self.x, self.weight, self.grad_output)))


def _normal(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    return rng.standard_normal(shape).astype(dtype)


def _strided_normal(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """A non-contiguous view: every other element of the last axis, axes 0/1 swapped."""
    n, c, *rest = shape
    big = rng.standard_normal((c, n, *rest[:-1], 2 * rest[-1])).astype(dtype)
    view = big[..., ::2].swapaxes(0, 1)
    assert not view.flags.c_contiguous
    return view


def run_operation(
    op: Operation, arrays: ConvArrays, case: ConvCase, backend: str | None = None
) -> np.ndarray:
    """Compute ``op`` ('forward', 'input-grad' or 'weight-grad') of ``case`` with ``backend``."""
    if op == "forward":
        return conv2d(arrays.x, arrays.weight, backend=backend, **case.params)
    if op == "input-grad":
        return conv2d_input_grad(
            arrays.x.shape, arrays.weight, arrays.grad_output, backend=backend, **case.params
        )
    if op == "weight-grad":
        return conv2d_weight_grad(
            arrays.x, arrays.weight.shape, arrays.grad_output, backend=backend, **case.params
        )
    raise ValueError(f"op must be one of {OPERATIONS}, got {op!r}")


def terms_per_output(op: Operation, geom: ConvGeometry) -> int:
    """How many products are summed into one element of ``op``'s result (an upper bound)."""
    kh, kw = geom.kernel_size
    if op == "forward":
        return geom.weight_shape[1] * kh * kw
    if op == "input-grad":
        return geom.out_channels // geom.groups * kh * kw
    return geom.batch * geom.out_size[0] * geom.out_size[1]


def error_bound(
    op: Operation, arrays: ConvArrays, case: ConvCase, backend: str = "naive"
) -> np.ndarray:
    """Elementwise bound on the difference between two correct results of ``op``.

    ``n * eps * magnitude``: ``magnitude`` is ``op`` on ``|operands|`` in float64 (the sum of
    absolute values of the terms), computed by ``backend``; ``n`` the number of terms,
    ``eps`` the epsilon of the arrays' dtype.
    """
    dtype = arrays.x.dtype
    return rounding_bound(magnitude(op, arrays, case, backend),
                          terms_per_output(op, case.geometry(dtype.name)), dtype)


def magnitude(
    op: Operation, arrays: ConvArrays, case: ConvCase, backend: str = "naive"
) -> np.ndarray:
    """``op`` on the operands' absolute values in float64: each output's ``sum(|terms|)``."""
    absolute = ConvArrays(*(np.abs(a) for a in (arrays.x, arrays.weight,
                                                arrays.grad_output))).astype(np.float64)
    return run_operation(op, absolute, case, backend)


def declared_bound_of(
    sums: np.ndarray, terms: int, dtype: np.dtype, error_factor: float = 1.0,
    error_spread: float = 0.0,
) -> np.ndarray:
    """The error a backend declaring ``error_factor`` and ``error_spread``
    (:class:`~convkit.Capabilities`) may make on results whose elements sum ``terms``
    products with absolute sums ``sums``: ``error_factor`` times :func:`rounding_bound`, plus
    ``error_spread * eps * max(sums)``. For an exact backend, :func:`rounding_bound` itself."""
    bound = rounding_bound(sums, terms, dtype)
    if error_factor != 1.0:
        bound = error_factor * bound
    if error_spread:
        bound = bound + error_spread * np.finfo(dtype).eps * float(sums.max(initial=0.0))
    return bound


def rounding_bound(magnitude: np.ndarray, terms: int, dtype: np.dtype) -> np.ndarray:
    """``terms * eps * magnitude`` (plus the smallest normal number): how far two correct
    ``dtype`` sums of ``terms`` products may differ, ``magnitude`` being the sums of the
    products' absolute values. :func:`error_bound` applies it to conv2d's operations."""
    return terms * np.finfo(dtype).eps * magnitude + np.finfo(dtype).tiny
