"""Experiments as library code: each takes one pydantic config, an executor (`genorder.executors`)
and a progress callback, and returns a typed result that writes the experiment's files. The CLI's
commands only parse options into the config, call these and render."""

from genorder.experiments.compare import CompareConfig, CompareResult, run_compare

__all__ = ["CompareConfig", "CompareResult", "run_compare"]
