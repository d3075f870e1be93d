"""Image datasets: Fashion-MNIST, image folders, .npz files and a generated colour set.

Every dataset is an `ImageDataset`: it holds its images in memory as a uint8 tensor (N, C, H, W)
plus int64 labels (N,), and yields `(image, label)` with image float32 (C, H, W) in [-1, 1].

    >>> from genorder.data import load_dataset, make_loader
    >>> ds = load_dataset("fashion-mnist", split="train", limit=512)
    >>> images, labels = next(make_loader(ds, batch_size=64))   # (64, 1, 32, 32), (64,)

Datasets are looked up by name in `genorder.registry.registry("datasets")`; a spec `name:ARG`
passes ARG (a path, for `imagefolder` and `npz`) through `DatasetConfig.arg`.
"""

from __future__ import annotations

import gzip
import os
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from pydantic import Field
from torch.utils.data import Dataset

from genorder.config import ComponentConfig
from genorder.errors import UserError

DEFAULT_DATASET = "fashion-mnist"
MAX_CLASSES = 10_000  # sanity limit: more classes than this is a data error (a stray label), not a dataset
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
_CHUNK = 4096  # images resized per interpolate call (bounds the float copy's memory)
DEFAULT_HOLDOUT = 0.1  # of each class, held out as the test split of a folder without train/ and test/
HOLDOUT_ENV = "GENORDER_HOLDOUT"  # a fraction in [0, 1); 0 turns the held-out split off


class DatasetConfig(ComponentConfig):
    """Options shared by every dataset."""

    arg: str | None = None  # the PATH in `imagefolder:PATH` / `npz:PATH`
    split: Literal["train", "test"] = "train"
    image_size: int | None = Field(default=None, gt=0)  # None: the dataset's native size
    limit: int | None = Field(default=None, gt=0)  # keep the first N items only
    channels: int | None = Field(default=None, gt=0)  # convert to 1 (grey) or 3 (RGB)
    # datasets without a test split of their own (an image folder without train/ and test/): the
    # fraction of each class held out as the test split (seeded, class-balanced); 0 = none (the test
    # split is then the training images). None: $GENORDER_HOLDOUT, else DEFAULT_HOLDOUT.
    holdout: float | None = Field(default=None, ge=0, lt=1)


# -- uint8 tensor helpers ---------------------------------------------------------------------


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, H, W) uint8 -> (N, C, size, size) uint8: area to shrink, bilinear to grow."""
    if images.shape[-2:] == (size, size):
        return images
    shrinking = size < min(images.shape[-2:])
    out = []
    for chunk in images.split(_CHUNK):
        x = chunk.float()
        if shrinking:
            y = F.interpolate(x, size=(size, size), mode="area")
        else:
            y = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        out.append(y.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out) if out else images.new_zeros((0, images.shape[1], size, size))


def convert_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """(N, C, H, W) uint8 -> (N, channels, H, W): grey <-> RGB, RGBA drops alpha."""
    c = images.shape[1]
    if c == channels:
        return images
    if c == 4:  # RGBA: drop alpha, then convert as RGB
        return convert_channels(images[:, :3], channels)
    if c == 1 and channels == 3:
        return repeat(images, "n 1 h w -> n c h w", c=3).contiguous()
    if c == 3 and channels == 1:
        weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        grey = (images.float() * weights).sum(dim=1, keepdim=True)  # (N, 1, H, W)
        return grey.round_().clamp_(0, 255).to(torch.uint8)
    raise UserError(
        f"cannot convert {c}-channel images to {channels} channels; use channels = 1 or 3"
    )


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 in [0, 255] -> float32 in [-1, 1] (any shape)."""
    return images.float().div_(127.5).sub_(1.0)


# -- base class -------------------------------------------------------------------------------


class ImageDataset(Dataset):
    """In-memory labelled images. Subclasses call `_set_data` from `__init__`.

    Attributes: `images` uint8 (N, C, H, W), `labels` int64 (N,), `num_classes`, `channels`,
    `image_size`, `class_names`.
    """

    Config = DatasetConfig

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    channels: int
    image_size: int
    class_names: list[str]
    # where the test split comes from: {"source": "files" | "held out" | "training images", ...};
    # "held out" adds fraction, seed and the train / test sizes (what runs print and record)
    split_info: dict | None = None

    def __init__(self, config: DatasetConfig) -> None:
        self.config = config

    def _set_data(self, images: torch.Tensor, labels: torch.Tensor, class_names: list[str]) -> None:
        """Store (N, C, H, W) uint8 images and (N,) labels, applying limit, channels and size."""
        cfg = self.config
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
            what = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
            raise UserError(f"{type(self).__name__}: images must be a uint8 tensor (N, C, H, W), got {what}")
        if cfg.limit is not None:
            images, labels = images[: cfg.limit], labels[: cfg.limit]
        if len(images) == 0:
            raise UserError(f"{type(self).__name__} ({cfg.split} split) holds no images")
        if cfg.channels is not None:
            images = convert_channels(images, cfg.channels)
        elif images.shape[1] == 4:
            images = convert_channels(images, 3)
        if cfg.image_size is not None:
            images = resize_uint8(images, cfg.image_size)
        check_labels(labels, len(class_names), type(self).__name__)
        self.images = images.contiguous()  # (N, C, H, W) uint8
        self.labels = labels.to(torch.int64)  # (N,)
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.channels = int(images.shape[1])
        self.image_size = int(images.shape[-1])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return to_float(self.images[i]), int(self.labels[i])

    def get_batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """idx (B,) -> images float32 (B, C, H, W) in [-1, 1], labels int64 (B,)."""
        return to_float(self.images[idx]), self.labels[idx]

    def _no_arg(self, name: str) -> None:
        if self.config.arg is not None:
            raise UserError(
                f"dataset {name!r} takes no argument; write {name!r}, not {name}:{self.config.arg}"
            )


def check_labels(labels: torch.Tensor, num_classes: int, source: str) -> None:
    """Labels must be integers in [0, num_classes) with 1 <= num_classes <= MAX_CLASSES."""
    if not 1 <= num_classes <= MAX_CLASSES:
        raise UserError(f"{source}: {num_classes} classes; a dataset needs 1..{MAX_CLASSES:,} classes")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise UserError(f"{source}: labels must be integers, got {labels.dtype}")
    if len(labels):
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= num_classes:
            raise UserError(
                f"{source}: labels span {lo}..{hi}, outside 0..{num_classes - 1} ({num_classes} classes)"
            )


def _need_path(name: str, arg: str | None) -> Path:
    """The existing path given as `name:PATH`, or a UserError."""
    if not arg:
        raise UserError(f"dataset {name!r} needs a path: write {name}:PATH")
    path = Path(arg).expanduser()
    if not path.exists():
        raise UserError(f"{name}: path not found: {path}")
    return path


# -- Fashion-MNIST ----------------------------------------------------------------------------

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip


def _read_idx_gz(path: Path, offset: int) -> np.ndarray:
    """Bytes after the IDX header of a gzipped IDX file, as uint8; corrupt files are UserErrors."""
    try:
        with gzip.open(path) as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as err:
        raise UserError(f"cannot read {path}: {err}; reinstall the dataset files") from None
    if len(raw) < offset:
        raise UserError(f"{path} is truncated; reinstall the dataset files")
    return np.frombuffer(raw, np.uint8, offset=offset)


class FashionMNIST(ImageDataset):
    """Fashion-MNIST: 28 px grey clothes padded to 32 px, 10 classes, 60k train / 10k test.

    Read from the Debian package `dataset-fashion-mnist` (or $GENORDER_FASHION_MNIST_DIR)."""

    def __init__(self, config: DatasetConfig) -> None:
        super().__init__(config)
        self._no_arg("fashion-mnist")
        root = Path(os.environ.get("GENORDER_FASHION_MNIST_DIR", FASHION_MNIST_DIR))
        prefix = "train" if config.split == "train" else "t10k"
        img_path = root / f"{prefix}-images-idx3-ubyte.gz"
        lbl_path = root / f"{prefix}-labels-idx1-ubyte.gz"
        for p in (img_path, lbl_path):
            if not p.is_file():
                raise UserError(
                    f"Fashion-MNIST file not found: {p}; install it with "
                    "`sudo apt-get install dataset-fashion-mnist` or point "
                    "GENORDER_FASHION_MNIST_DIR at a folder holding the IDX .gz files"
                )
        pixels = _read_idx_gz(img_path, 16)
        labels = _read_idx_gz(lbl_path, 8)
        if len(pixels) % (28 * 28) or len(pixels) // (28 * 28) != len(labels):
            raise UserError(
                f"{img_path} and {lbl_path} disagree ({len(pixels)} pixel bytes, {len(labels)} "
                "labels); reinstall the dataset files"
            )
        n = len(labels) if config.limit is None else min(config.limit, len(labels))
        images = torch.from_numpy(pixels[: n * 28 * 28].reshape(n, 1, 28, 28).copy())
        images = F.pad(images, (2, 2, 2, 2), value=0)  # (N, 1, 32, 32), background stays 0
        self._set_data(images, torch.from_numpy(labels[:n].astype(np.int64)), FASHION_MNIST_CLASSES)


# -- image folders ----------------------------------------------------------------------------


MAX_IMAGE_PIXELS = 50_000_000  # one image larger than this (by its header) is refused before decoding


def _load_image(path: Path, size: int, mode: str) -> np.ndarray:
    """Read one image, resize its shorter side to `size`, centre-crop -> (size, size[, 3]) uint8.
    The header's size is checked before any pixel is decoded (decompression bombs)."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im_ctx = Image.open(path)  # reads the header only
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UserError(f"cannot read image {path}: its header declares an image too large to decode safely") from None
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise UserError(f"cannot read image {path}: {err}") from None
    try:
        with im_ctx as im:
            w, h = im.size
            if w < 1 or h < 1 or w * h > MAX_IMAGE_PIXELS:
                raise UserError(f"cannot read image {path}: its header declares {w}x{h} px; images are limited to "
                                f"{MAX_IMAGE_PIXELS:,} pixels (resize it first)")  # fmt: skip
            im = im.convert(mode)
            w, h = im.size
            scale = size / min(w, h)
            nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
            im = im.resize((nw, nh), Image.Resampling.BICUBIC, reducing_gap=3.0)
            left, top = (nw - size) // 2, (nh - size) // 2
            im = im.crop((left, top, left + size, top + size))
            return np.asarray(im, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError, EOFError) as err:
        raise UserError(f"cannot read image {path}: {err}") from None


def holdout_fraction(config: DatasetConfig) -> float:
    """The held-out fraction for a dataset without a test split: the config's, else $GENORDER_HOLDOUT,
    else DEFAULT_HOLDOUT."""
    if config.holdout is not None:
        return config.holdout
    raw = os.environ.get(HOLDOUT_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_HOLDOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value < 1:
        raise UserError(f"${HOLDOUT_ENV}={raw!r}: give a fraction in [0, 1) (0 turns the held-out split off)")
    return value


def set_holdout(fraction: float | None) -> None:
    """Make `fraction` the held-out fraction of this process and of the worker processes it starts
    (through $GENORDER_HOLDOUT, which they inherit); None leaves it as it is. What `--holdout` sets."""
    if fraction is None:
        return
    if not 0 <= fraction < 1:
        raise UserError(f"--holdout {fraction:g}: give a fraction in [0, 1) (0 turns the held-out split off)")
    os.environ[HOLDOUT_ENV] = repr(float(fraction))


def held_out_indices(labels: torch.Tensor, split: str, fraction: float) -> tuple[torch.Tensor, dict]:
    """The items of `split` when a labelled set (N,) without a test split of its own holds out
    `fraction` of each class (seeded, class-balanced: `genorder.subsets.balanced_split`), and the
    split record. fraction 0: every item, for both splits (the record says so)."""
    from genorder.subsets import SUBSET_SEED, balanced_split

    if fraction <= 0:
        return torch.arange(len(labels)), {"source": "training images", "holdout": 0.0,
                                           "note": "no held-out split: the test split is the training images"}
    train, test = balanced_split(labels, fraction, SUBSET_SEED)
    if len(test) == 0 and split == "test":
        raise UserError(
            f"cannot hold out {fraction:.0%} of each class: no class has 2 images; add images, or set "
            f"{HOLDOUT_ENV}=0 to score on the training images"
        )
    info = {"source": "held out", "holdout": fraction, "seed": SUBSET_SEED, "train": len(train), "test": len(test)}
    return (test if split == "test" else train), info


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


class ImageFolder(ImageDataset):
    """Your images from imagefolder:PATH, one folder per class; RGB, 64 px by default.

    Reads PATH/<class>/*.png|jpg|jpeg|webp, or PATH/{train,test}/<class>/... when both split
    folders exist. Without them, a seeded, class-balanced 10% of each class is held out as the test
    split (`holdout`, or $GENORDER_HOLDOUT; 0 turns it off and both splits read every image;
    `split_info` records which). The shorter side is resized, then centre-cropped; labels follow
    sorted folder names. Images directly in PATH form a single class. `limit` keeps a seeded
    class-balanced subset (`genorder.subsets.balanced_subset`), not the first files."""

    DEFAULT_SIZE = 64

    def __init__(self, config: DatasetConfig) -> None:
        super().__init__(config)
        path = _need_path("imagefolder", config.arg)
        if not path.is_dir():
            raise UserError(f"imagefolder: {path} is not a folder; expected PATH/<class>/*.png")
        has_splits = (path / "train").is_dir() and (path / "test").is_dir()
        if has_splits:
            path = path / config.split
        classes = sorted(d for d in path.iterdir() if d.is_dir() and _image_files(d))
        if classes:
            files = [(f, k) for k, d in enumerate(classes) for f in _image_files(d)]
            names = [d.name for d in classes]
        else:  # images directly in PATH: a single class
            files = [(f, 0) for f in _image_files(path)]
            names = [path.name]
        if not files:
            raise UserError(
                f"imagefolder: no images ({'/'.join(IMAGE_SUFFIXES)}) in {path} or its subfolders"
            )
        if has_splits:
            self.split_info = {"source": "files"}
        else:
            keep, self.split_info = held_out_indices(
                torch.tensor([k for _, k in files]), config.split, holdout_fraction(config)
            )
            files = [files[i] for i in keep.tolist()]
        if config.limit is not None and config.limit < len(files):
            from genorder.subsets import balanced_subset

            keep = balanced_subset(torch.tensor([k for _, k in files]), config.limit)
            files = [files[i] for i in torch.sort(keep).values.tolist()]
        size = config.image_size or self.DEFAULT_SIZE
        mode = "L" if config.channels == 1 else "RGB"
        arrays = [_load_image(f, size, mode) for f, _ in files]
        stacked = torch.from_numpy(np.stack(arrays))  # (N, H, W) or (N, H, W, 3)
        if stacked.ndim == 3:
            images = rearrange(stacked, "n h w -> n 1 h w")
        else:
            images = rearrange(stacked, "n h w c -> n c h w")
        labels = torch.tensor([k for _, k in files], dtype=torch.int64)
        self._set_data(images.contiguous(), labels, names)


# -- .npz files -------------------------------------------------------------------------------


def _to_nchw(images: np.ndarray, key: str, path: Path) -> torch.Tensor:
    """(N,H,W), (N,H,W,C) or (N,C,H,W) uint8 array -> (N, C, H, W) uint8 tensor."""
    if images.dtype != np.uint8:
        raise UserError(
            f"{path}: {key!r} must be uint8 in [0, 255], got {images.dtype}; "
            "convert with (x * 255).round().astype(np.uint8) if it is in [0, 1]"
        )
    t = torch.from_numpy(np.ascontiguousarray(images))
    if t.ndim == 3:
        t = rearrange(t, "n h w -> n 1 h w")
    elif t.ndim == 4 and t.shape[3] in (1, 3, 4) and t.shape[1] == t.shape[2]:
        t = rearrange(t, "n h w c -> n c h w")
    elif t.ndim == 4 and t.shape[1] in (1, 3, 4):
        pass  # already (N, C, H, W)
    else:
        raise UserError(
            f"{path}: {key!r} has shape {tuple(images.shape)}; expected (N,H,W), (N,H,W,C) or "
            "(N,C,H,W) with C in 1, 3, 4"
        )
    if t.shape[2] != t.shape[3]:
        raise UserError(
            f"{path}: {key!r} images are {t.shape[2]}x{t.shape[3]}; they must be square"
        )
    return t.contiguous()


def _labels(arr: np.ndarray | None, n: int, key: str, path: Path) -> torch.Tensor:
    """(N,) integer labels >= 0, or zeros when the file has none."""
    if arr is None:
        return torch.zeros(n, dtype=torch.int64)
    if not np.issubdtype(arr.dtype, np.integer) or arr.shape != (n,):
        raise UserError(
            f"{path}: {key!r} must be {n} integers (shape ({n},)), "
            f"got {arr.dtype} {tuple(arr.shape)}"
        )
    if n and arr.min() < 0:
        raise UserError(f"{path}: {key!r} holds negative labels; labels must be 0..num_classes-1")
    return torch.from_numpy(arr.astype(np.int64))


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of a .npz file (no pickles). Before an array is read, its header's size is checked
    against the bytes stored for it, so a header that lies cannot allocate memory it does not hold;
    a .npy file, a truncated or a damaged file is a `UserError`."""
    what = f"npz: cannot read {path} as a .npz file"
    if not zipfile.is_zipfile(path):
        hint = " (it is a single .npy array: save it with np.savez(PATH, images=...))" if _is_npy(path) else ""
        raise UserError(f"{what}: not a zip archive of arrays{hint}")
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if info.filename.endswith(".npy"):
                    _check_npy_member(zf, info, path)
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except UserError:
        raise
    except (OSError, ValueError, EOFError, zlib.error, zipfile.BadZipFile, KeyError, MemoryError) as err:
        raise UserError(f"{what} (truncated or not an npz?): {type(err).__name__}: {err}") from None


def _is_npy(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(6) == b"\x93NUMPY"
    except OSError:
        return False


def _check_npy_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> None:
    """The array header of one member: its declared bytes must fit in the member's stored size."""
    from numpy.lib import format as npy_format

    with zf.open(info) as f:
        version = npy_format.read_magic(f)
        if version == (1, 0):
            shape, _fortran, dtype = npy_format.read_array_header_1_0(f)
        else:
            shape, _fortran, dtype = npy_format.read_array_header_2_0(f)
        header_len = f.tell()
    if dtype.hasobject:
        raise UserError(f"npz: {path}: {info.filename} holds Python objects; only plain arrays are read")
    declared = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    if declared > info.file_size - header_len:
        raise UserError(
            f"npz: {path}: {info.filename} declares shape {tuple(shape)} ({declared:,} bytes) but holds "
            f"{max(info.file_size - header_len, 0):,}; the file is damaged or truncated"
        )


class NpzDataset(ImageDataset):
    """Arrays from npz:PATH: uint8 `images` with optional int `labels`.

    `test_images`/`test_labels` feed the test split when present (otherwise both splits read
    `images`); an optional `class_names` string array names the classes."""

    def __init__(self, config: DatasetConfig) -> None:
        super().__init__(config)
        path = _need_path("npz", config.arg)
        arrays = read_npz(path)
        prefix = "test_" if config.split == "test" and "test_images" in arrays else ""
        key = f"{prefix}images"
        if key not in arrays:
            raise UserError(
                f"npz: {path} has no {key!r} array (it has: {', '.join(arrays) or 'none'})"
            )
        images = _to_nchw(arrays[key], key, path)
        labels = _labels(arrays.get(f"{prefix}labels"), len(images), f"{prefix}labels", path)
        names = self._class_names(arrays, labels, path)
        self.split_info = {"source": "files" if "test_images" in arrays else "training images"}
        self._set_data(images, labels, names)

    @staticmethod
    def _class_names(arrays: dict[str, np.ndarray], labels: torch.Tensor, path: Path) -> list[str]:
        """`class_names` from the file, else "0".."K-1" with K = max label + 1 over both splits."""
        k = 1
        for key in ("labels", "test_labels"):
            if key in arrays and arrays[key].size and np.issubdtype(arrays[key].dtype, np.integer):
                k = max(k, int(arrays[key].max()) + 1)
        k = max(k, int(labels.max()) + 1 if len(labels) else 1)
        if k > MAX_CLASSES and "class_names" not in arrays:
            raise UserError(
                f"npz: {path} has a label {k - 1}: that would make {k:,} classes (the limit is "
                f"{MAX_CLASSES:,}); labels must be 0..num_classes-1, or list the classes in a "
                "`class_names` array"
            )
        if "class_names" in arrays:
            names = [str(s) for s in arrays["class_names"].tolist()]
            if len(names) < k:
                raise UserError(
                    f"npz: {path} lists {len(names)} class_names but labels go up to {k - 1}"
                )
            return names
        return [str(i) for i in range(k)]


# -- generated shapes -------------------------------------------------------------------------

SHAPE_CLASSES = ["square", "circle", "triangle", "cross"]


def _shape_masks(kind: torch.Tensor, cx, cy, r, size: int) -> torch.Tensor:
    """Coverage (N, size, size) in {0, 1} of each item's shape; kind/cx/cy/r are (N,) in pixels."""
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    dy = coords.view(1, size, 1) - cy.view(-1, 1, 1)  # (N, S, 1)
    dx = coords.view(1, 1, size) - cx.view(-1, 1, 1)  # (N, 1, S)
    r = r.view(-1, 1, 1)
    square = (dx.abs() <= 0.8 * r) & (dy.abs() <= 0.8 * r)
    circle = dx**2 + dy**2 <= r**2
    triangle = (dy.abs() <= 0.85 * r) & (dx.abs() <= 0.5 * (dy + 0.85 * r))  # apex up
    arm = 0.3 * r
    cross = ((dx.abs() <= arm) & (dy.abs() <= r)) | ((dy.abs() <= arm) & (dx.abs() <= r))
    stack = torch.stack([square, circle, triangle, cross])  # (4, N, S, S)
    return stack[kind, torch.arange(len(kind))].float()  # (N, S, S)


def render_shapes(
    n: int, size: int, seed: int, count: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw `n` items' parameters from `seed` and render the first `count` (default n).

    Returns images uint8 (count, 3, size, size) and labels int64 (count,). Rendering at 2x and
    area-downsampling gives anti-aliased edges."""
    g = torch.Generator().manual_seed(seed)
    kind = torch.randint(0, len(SHAPE_CLASSES), (n,), generator=g)
    r = 0.18 + 0.17 * torch.rand(n, generator=g)  # radius as a fraction of the side
    cx = r + (1 - 2 * r) * torch.rand(n, generator=g)  # the shape stays inside the image
    cy = r + (1 - 2 * r) * torch.rand(n, generator=g)
    fg = 0.35 + 0.65 * torch.rand(n, 3, generator=g)  # bright colours
    bg = 0.25 * torch.rand(n, 3, generator=g)  # dark backgrounds
    count = n if count is None else min(count, n)
    hi = 2 * size
    mask = _shape_masks(kind[:count], cx[:count] * hi, cy[:count] * hi, r[:count] * hi, hi)
    mask = rearrange(mask, "n h w -> n 1 h w")
    img = bg[:count, :, None, None] + (fg - bg)[:count, :, None, None] * mask  # (count, 3, 2S, 2S)
    img = F.avg_pool2d(img, 2)  # (count, 3, S, S)
    return (img * 255).round_().clamp_(0, 255).to(torch.uint8), kind[:count].to(torch.int64)


class Shapes(ImageDataset):
    """Generated colour shapes, 4 classes (square, circle, triangle, cross), 32 px RGB.

    2048 train / 512 test items, deterministic per split (a seeded generator per split)."""

    SIZES = {"train": 2048, "test": 512}
    SEEDS = {"train": 1234, "test": 5678}
    DEFAULT_SIZE = 32

    def __init__(self, config: DatasetConfig) -> None:
        super().__init__(config)
        self._no_arg("shapes")
        size = config.image_size or self.DEFAULT_SIZE
        images, labels = render_shapes(
            self.SIZES[config.split], size, self.SEEDS[config.split], count=config.limit
        )
        self._set_data(images, labels, SHAPE_CLASSES)


# -- lookup and loading -----------------------------------------------------------------------


def parse_spec(spec: str) -> tuple[str, str | None]:
    """ "name" -> ("name", None); "name:ARG" -> ("name", "ARG") (ARG may itself contain ':')."""
    name, sep, arg = spec.partition(":")
    name = name.strip()
    if not name:
        raise UserError(f"dataset spec {spec!r} has no name; write NAME or NAME:ARG")
    return name, (arg if sep else None)


def load_dataset(
    spec: str = DEFAULT_DATASET,
    split: str = "train",
    image_size: int | None = None,
    limit: int | None = None,
    channels: int | None = None,
    holdout: float | None = None,
) -> ImageDataset:
    """Create the dataset named by `spec` ("name" or "name:ARG") from the datasets registry.
    `holdout`: see `DatasetConfig.holdout` (datasets without a test split of their own)."""
    from genorder.registry import registry

    name, arg = parse_spec(spec)
    options = {
        "arg": arg,
        "split": split,
        "image_size": image_size,
        "limit": limit,
        "channels": channels,
    }
    if holdout is not None:
        options["holdout"] = holdout
    ds = registry("datasets").create(name, options)
    check_finite(ds, spec)
    return ds


def check_finite(dataset: Dataset, spec: str, chunk: int = 4096) -> None:
    """Refuse a dataset holding a non-finite pixel (NaN or inf), which would train silently on
    garbage. uint8 images (every `ImageDataset`) are finite by construction; any other dataset (a
    plugin's) is read once, batch by batch, through `get_batch` or item by item."""
    images = getattr(dataset, "images", None)
    if isinstance(images, torch.Tensor) and not images.is_floating_point() and not images.is_complex():
        return
    n = len(dataset)  # type: ignore[arg-type]
    get_batch = getattr(dataset, "get_batch", None)
    for start in range(0, n, chunk):
        idx = torch.arange(start, min(start + chunk, n))
        if get_batch is not None:
            x = get_batch(idx)[0]
        else:
            x = torch.stack([torch.as_tensor(dataset[int(i)][0]) for i in idx])
        x = torch.as_tensor(x)
        if x.is_complex() or not (x.is_floating_point() or x.dtype == torch.uint8):
            raise UserError(f"dataset {spec}: images must be real numbers (float or uint8), got {x.dtype}")
        bad = ~torch.isfinite(x.reshape(len(x), -1)).all(dim=1) if x.is_floating_point() else None  # (B,)
        if bad is not None and bool(bad.any()):
            first = start + int(bad.nonzero()[0])
            raise UserError(f"dataset {spec}: image {first} holds non-finite pixels (NaN or inf); "
                            f"{int(bad.sum())} of the images {start}..{start + len(x) - 1} do; fix the data")  # fmt: skip


def make_loader(
    dataset: Dataset, batch_size: int, shuffle: bool = True, seed: int = 0, drop_last: bool = True
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless batches (images (B, C, H, W), labels (B,)), re-shuffled each epoch from `seed`.

    In-memory `ImageDataset`s are sliced directly; other datasets are indexed item by item."""
    n = len(dataset)  # type: ignore[arg-type]
    if batch_size <= 0:
        raise UserError(f"batch size must be positive, got {batch_size}")
    if n == 0:
        raise UserError("the dataset is empty")
    if drop_last and n < batch_size:
        raise UserError(
            f"the dataset has {n} items, fewer than the batch size {batch_size}; "
            "lower the batch size"
        )
    return _batches(dataset, n, batch_size, shuffle, seed, drop_last)


def _batches(
    dataset: Dataset, n: int, batch_size: int, shuffle: bool, seed: int, drop_last: bool
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    get_batch = getattr(dataset, "get_batch", None)
    while True:
        order = torch.randperm(n, generator=g) if shuffle else torch.arange(n)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            idx = order[start : start + batch_size]  # (B,)
            if get_batch is not None:
                yield get_batch(idx)
            else:
                items = [dataset[int(i)] for i in idx]
                images = torch.stack([torch.as_tensor(x) for x, _ in items])
                labels = torch.tensor([int(y) for _, y in items], dtype=torch.int64)
                yield images, labels


def class_balanced_labels(num_classes: int, n: int) -> torch.Tensor:
    """`n` labels sorted and spread evenly over the classes: (0,0,..,1,1,..,K-1) int64 (n,).

    With n = num_classes * per_row, a grid with nrow=per_row shows one row per class."""
    if num_classes <= 0 or n < 0:
        raise UserError(f"need num_classes > 0 and n >= 0, got {num_classes} and {n}")
    return torch.arange(n, dtype=torch.int64) * num_classes // max(n, 1)
