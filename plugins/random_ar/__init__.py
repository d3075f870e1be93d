"""The random-order autoregression plugin (σ-GPT / RandAR)."""

from genorder import hookimpl

from .order import RandomAR


@hookimpl
def register_orders(register):
    register("random-ar", RandomAR)
