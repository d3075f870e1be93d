"""The PAR plugin: parallelized autoregression over regions."""

from genorder import hookimpl

from .order import PAR


@hookimpl
def register_orders(register):
    register("par", PAR)
