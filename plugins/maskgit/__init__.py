"""The MaskGIT (masked parallel decoding) order plugin."""

from genorder import hookimpl

from .order import MaskGIT


@hookimpl
def register_orders(register):
    register("maskgit", MaskGIT)
