"""`pirf bench`: the comparison table of PIRF, its baselines and its ablations (see `pirf.bench.config`)."""

from pirf.bench.config import ABLATIONS, ROWS, BenchConfig, resolve_bench_config
from pirf.bench.runner import run_bench
from pirf.bench.table import write_tables

__all__ = ["ABLATIONS", "ROWS", "BenchConfig", "resolve_bench_config", "run_bench", "write_tables"]
