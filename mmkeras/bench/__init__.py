"""Benchmarks on paired image+text data: `python -m mmkeras.bench --help`.

config (BenchConfig) -> plan (which rows, how each trains) -> strategies (train) ->
metrics/measure (measure) -> analyses, report, plots (write); runner.run is the loop.
"""

from mmkeras.bench.config import DEFAULT_IMAGE_MODEL, BenchConfig
from mmkeras.bench.plan import select_rows
from mmkeras.bench.runner import load_data, run

__all__ = ["DEFAULT_IMAGE_MODEL", "BenchConfig", "load_data", "run", "select_rows"]
