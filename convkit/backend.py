"""The interface every convolution backend implements, and its capability declaration.

A backend is a class (or instance) registered under the entry-point group
``convkit.backends``. The core guarantees it, for every call:

* a :class:`~convkit.geometry.ConvGeometry` that is validated and fully resolved
  (explicit four-sided padding, pairs for stride and dilation);
* C-contiguous arrays of one dtype, ``geom.dtype``, which the backend declared it supports,
  with every dimension non-zero;
* a configuration (groups, dilation, stride, padding) that its :class:`Capabilities` allow.

It must return a new array of the documented shape and ``geom.dtype``; the core checks that.
Before the call, the core checks that the result and the backend's declared
:meth:`ConvBackend.workspace_bytes` fit in the available memory. Bias is handled by the
core. A backend never validates arguments and never reads the environment (the one
exception, ``auto``, does all its reading in :mod:`convkit.autotune.settings`).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from convkit.geometry import SUPPORTED_DTYPES, ConvGeometry


@dataclass(frozen=True)
class Capabilities:
    """What a backend can compute. The defaults describe a backend that does everything."""

    dtypes: frozenset[str] = field(
        default_factory=lambda: frozenset(d.name for d in SUPPORTED_DTYPES)
    )
    groups: bool = True
    dilation: bool = True
    stride: bool = True
    padding: bool = True
    kernel_sizes: frozenset[tuple[int, int]] | None = None
    """The kernel sizes ``(kh, kw)`` it computes; ``None`` (the default) means any."""
    error_factor: float = 1.0
    """Its results lie within this factor times the direct-sum error bound
    ``n * eps * sum(|terms|)`` (:func:`convkit.testing.error_bound`). 1 is an exact algorithm;
    a fast one (Winograd, FFT) declares more and runs unasked only under the ``'fast'``
    precision policy (:mod:`convkit.precision`)."""
    error_spread: float = 0.0
    """An error that does not follow each output's own terms but spreads over all of them
    (an FFT's rounding): the bound gains ``error_spread * eps * max(magnitude)``, the largest
    direct-sum magnitude ``sum(|terms|)`` of the whole result. 0 (no such term) for every
    direct method; the bound of an exact backend is the direct-sum bound alone."""

    def __post_init__(self) -> None:
        if not self.error_factor >= 1.0:
            raise ValueError(f"error_factor must be at least 1, got {self.error_factor!r}")
        if not self.error_spread >= 0.0:
            raise ValueError(f"error_spread must be at least 0, got {self.error_spread!r}")

    @property
    def exact(self) -> bool:
        """Whether results are as accurate as a direct sum (``error_factor`` 1, no spread)."""
        return self.error_factor <= 1.0 and self.error_spread == 0.0

    def unsupported_reason(self, geom: ConvGeometry) -> str | None:
        """Why ``geom`` cannot run on a backend with these capabilities, or ``None``."""
        if geom.dtype.name not in self.dtypes:
            return f"dtype {geom.dtype.name} is not supported (supports {sorted(self.dtypes)})"
        if geom.groups != 1 and not self.groups:
            return f"groups={geom.groups} is not supported (only groups=1)"
        if geom.dilation != (1, 1) and not self.dilation:
            return f"dilation={geom.dilation} is not supported (only 1)"
        if geom.stride != (1, 1) and not self.stride:
            return f"stride={geom.stride} is not supported (only 1)"
        if any(geom.padding) and not self.padding:
            return f"padding={geom.padding} is not supported (only 0)"
        if self.kernel_sizes is not None and geom.kernel_size not in self.kernel_sizes:
            return (f"kernel_size={geom.kernel_size} is not supported "
                    f"(supports {_sizes(self.kernel_sizes)})")
        return None

    def describe(self) -> str:
        """One line for listings, e.g. ``float32, float64; groups, dilation, stride, padding``
        (a backend limited to some kernel sizes lists them, e.g. ``; kernels 3x3``; an
        inexact backend's line ends with its error factor)."""
        features = [f for f in ("groups", "dilation", "stride", "padding") if getattr(self, f)]
        line = f"{', '.join(sorted(self.dtypes))}; {', '.join(features) or 'no options'}"
        if self.kernel_sizes is not None:
            line += f"; kernels {_sizes(self.kernel_sizes)}"
        if self.exact:
            return line
        spread = f", spread {self.error_spread:g}" if self.error_spread else ""
        return f"{line}; inexact (error x{self.error_factor:g}{spread})"


def _sizes(kernel_sizes: frozenset[tuple[int, int]]) -> str:
    """``{(3, 3), (1, 1)}`` -> ``'1x1, 3x3'``."""
    return ", ".join(f"{kh}x{kw}" for kh, kw in sorted(kernel_sizes)) or "none"


class ConvBackend(abc.ABC):
    """A 2-D convolution implementation: the forward pass and both gradients.

    Shapes (``geom`` gives them all): ``x: (N, C, H, W)``, ``weight: (Cout, C/groups, kh, kw)``,
    ``y`` and ``grad_output: (N, Cout, Ho, Wo)``.
    """

    #: The name it is registered under; the registry sets it from the entry point.
    name: str = ""
    capabilities: ClassVar[Capabilities] = Capabilities()
    #: What it is good at, in one line (``convkit backends`` shows it).
    description: ClassVar[str] = ""

    @abc.abstractmethod
    def forward(self, x: np.ndarray, weight: np.ndarray, geom: ConvGeometry) -> np.ndarray:
        """``y: (N, Cout, Ho, Wo)``, the cross-correlation of ``x`` with ``weight``."""

    @abc.abstractmethod
    def backward_input(
        self, grad_output: np.ndarray, weight: np.ndarray, geom: ConvGeometry
    ) -> np.ndarray:
        """``grad_x: (N, C, H, W)``, the gradient of ``sum(y * grad_output)`` w.r.t. ``x``."""

    @abc.abstractmethod
    def backward_weight(
        self, x: np.ndarray, grad_output: np.ndarray, geom: ConvGeometry
    ) -> np.ndarray:
        """``grad_w: (Cout, C/groups, kh, kw)``, the gradient w.r.t. ``weight``."""

    def prepare(self, geom: ConvGeometry, method: str) -> None:
        """Do now, for ``geom``, what the first call of ``method`` would otherwise do inside
        it beyond computing (``auto`` measures its candidates here). A harness calls it
        before timing anything and reports its time on its own. The default does nothing.
        """
        return None

    def workspace_bytes(self, geom: ConvGeometry, method: str) -> int:
        """Bytes of temporary buffers ``method`` allocates for ``geom``, besides its result.

        ``method`` is ``'forward'``, ``'backward_input'`` or ``'backward_weight'``. The core
        adds the result's size and refuses a call that cannot fit in the available memory
        (:class:`~convkit.MemoryBudgetError`) before calling the backend. Override it if the
        backend allocates anything large (padded copies, columns); the default is 0.
        """
        return 0

    def retained_bytes(self) -> int:
        """Bytes the backend keeps allocated between calls (work buffers, caches), which
        :meth:`workspace_bytes` does not count once they exist. ``convkit bench`` adds them to
        a call's memory. The default is 0.
        """
        return 0

    def release_retained(self) -> None:
        """Let go of what :meth:`retained_bytes` counts (later calls allocate afresh, and keep
        again). Safe while other threads call the backend: a buffer a running call uses stays
        alive until that call ends. The default does nothing.
        """
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
