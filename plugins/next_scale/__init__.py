"""The next-scale (VAR) order plugin."""

from genorder import hookimpl

from .order import NextScale


@hookimpl
def register_orders(register):
    register("next-scale", NextScale)
