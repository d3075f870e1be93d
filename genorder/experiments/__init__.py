"""Experiments as library code: each takes one pydantic config, an executor and a progress callback,
and returns a typed result object that writes the experiment's files."""
