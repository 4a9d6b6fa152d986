"""Benchmarks on paired image+text data: `python -m mmkeras.bench --help`."""

from mmkeras.bench.runner import BenchConfig, load_data, run, select_rows

__all__ = ["BenchConfig", "load_data", "run", "select_rows"]
