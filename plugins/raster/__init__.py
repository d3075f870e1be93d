"""The raster (row-major next-token) order plugin."""

from genorder import hookimpl

from .order import Raster


@hookimpl
def register_orders(register):
    register("raster", Raster)
