"""The RAR plugin: randomness-annealed autoregression."""

from genorder import hookimpl

from .order import RAR


@hookimpl
def register_orders(register):
    register("rar", RAR)
