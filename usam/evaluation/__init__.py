"""Evaluation: the benchmark registry (`registry`) and the comparison report over runs (`report`)."""
from usam.evaluation.registry import MIXED, Benchmark, load_registry

__all__ = ["Benchmark", "load_registry", "MIXED"]
