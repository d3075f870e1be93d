"""Registers the built-in datasets: fashion-mnist (default), imagefolder:PATH, npz:PATH, shapes."""

from genorder import hookimpl
from genorder.data import FashionMNIST, ImageFolder, NpzDataset, Shapes


@hookimpl
def register_datasets(register):
    register("fashion-mnist", FashionMNIST)
    register("imagefolder", ImageFolder)
    register("npz", NpzDataset)
    register("shapes", Shapes)
