"""Registers the standard sampler (temperature, top-k, top-p, CFG schedule, more_smooth)."""

from genorder import StandardSampler, hookimpl


@hookimpl
def register_samplers(register):
    register("standard", StandardSampler)
