"""The numba backend: direct convolution as numba-compiled loops, no im2col.

One module per kernel family, and the backend that chooses among them:

* :mod:`.general` -- any geometry, row by row with loops clipped to the image;
* :mod:`.wide` -- stride 1, any kernel size: the forward pass by :mod:`.vector_rows` (two
  output rows' sums held in registers, :mod:`._vectors`) where it applies, else every
  output row computed ``Wp`` wide, so up to 8 taps of a kernel row are one long vectorised
  loop over a padded plane (the input gradient runs as the forward pass of the flipped
  kernel);
* :mod:`.three_by_three` -- stride-1 3x3: nine taps in one pass, two output channels at a
  time, each thread padding the planes it works on into its own scratch;
* :mod:`.stride_two` -- stride-2 3x3 without dilation: the same on planes split by row and
  column parity;
* :mod:`.vector_rows` -- forward passes without dilation, two output rows' sums in
  registers (:mod:`._vectors`): ``wide``'s, and strided layers of few channels per group;
* :mod:`._taps` (the nine-tap loops of both 3x3 families) and :mod:`._helpers` (compile
  flags, job numbering, inline copies and sums);
* :mod:`.backend` -- :class:`~convkit_backends.numba_direct.backend.NumbaBackend`.

Kernels are compiled lazily per dtype and cached on disk (see :mod:`._runtime`, which also
keeps idle OpenMP threads from spinning; :mod:`._threads` serialises launches where numba's
threading layer is not thread-safe). Accumulators take the array's dtype, so float32 stays
float32; fastmath only as ``{'contract', 'reassoc'}`` (NaN and Inf behave as in the other
backends).
"""
