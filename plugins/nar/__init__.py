"""The NAR plugin: next-neighbour autoregression."""

from genorder import hookimpl

from .order import NAR


@hookimpl
def register_orders(register):
    register("nar", NAR)
