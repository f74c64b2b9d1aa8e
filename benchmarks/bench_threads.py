"""Thread hygiene: does a numba convolution slow down the numpy matmul that follows it?

numba's OpenMP worker threads used to spin for milliseconds after each parallel kernel, and a
BLAS call started meanwhile fought them for the cores (measured 16x slower on 2 cores).
``track_matmul_slowdown`` reports the median, over pairs, of (matmul right after a numba
convolution) / (matmul after the threads had time to go idle): 1.0 means no interference.
That ratio needs a quiet machine; ``track_idle_cpu_ms`` shows the cause on a busy one too:
the CPU time the process burns while it sleeps for 100 ms right after a convolution.
"""

import time

import numpy as np

from convkit.geometry import make_geometry
from convkit.registry import get_backend

PAIRS = 25


class MatmulAfterNumba:
    timeout = 120

    def setup(self):
        rng = np.random.default_rng(0)
        self.a = rng.standard_normal((512, 512), dtype=np.float32)
        x = rng.standard_normal((8, 32, 28, 28), dtype=np.float32)
        weight = rng.standard_normal((32, 32, 3, 3), dtype=np.float32)
        geom = make_geometry(x.shape, weight.shape, padding=1, dtype=np.float32)
        backend = get_backend("numba")
        self.conv = lambda: backend.forward(x, weight, geom)
        self.conv()  # compile (or load from the cache) outside the measurement
        for _ in range(5):
            self.a @ self.a

    def _matmul_seconds(self):
        start = time.perf_counter()
        self.a @ self.a
        return time.perf_counter() - start

    def track_matmul_slowdown(self):
        ratios = []
        for _ in range(PAIRS):
            self.conv()
            time.sleep(0.05)  # spinning threads, if any, give up by then
            quiet = self._matmul_seconds()
            self.conv()
            right_after = self._matmul_seconds()
            ratios.append(right_after / quiet)
        return float(np.median(ratios))

    track_matmul_slowdown.unit = "ratio"

    def track_idle_cpu_ms(self):
        burnt = []
        for _ in range(10):
            self.conv()
            start = time.process_time()
            time.sleep(0.1)
            burnt.append(time.process_time() - start)
        return float(np.median(burnt)) * 1e3

    track_idle_cpu_ms.unit = "ms"


if __name__ == "__main__":
    bench = MatmulAfterNumba()
    bench.setup()
    print(f"matmul right after a numba convolution / quiet: {bench.track_matmul_slowdown():.2f}x")
    print(f"CPU burnt sleeping 100 ms after a numba conv: {bench.track_idle_cpu_ms():.1f} ms")
