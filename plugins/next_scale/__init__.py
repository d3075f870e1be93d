"""The next-scale (VAR) order plugin, and the importer of the official VAR checkpoints."""

from genorder import hookimpl

from .importer import VarImporter
from .order import NextScale


@hookimpl
def register_orders(register):
    register("next-scale", NextScale)


@hookimpl
def register_importers(register):
    register("var", VarImporter)
