"""convkit's airspeed velocity (asv) suite: every backend's speed, memory and throughput.

Run it with ``asv`` from the repository root (see the README); ``asv.conf.json`` points here.
Shared set-up lives in :mod:`benchmarks.common`, one module per kind of measurement.
"""
