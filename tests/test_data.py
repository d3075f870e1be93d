"""Dataset loaders on tiny generated files, plus the loader and label helpers."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from genorder.data import (
    FASHION_MNIST_CLASSES,
    ImageDataset,
    class_balanced_labels,
    load_dataset,
    make_loader,
    parse_spec,
)
from genorder.errors import UserError


def check_items(ds: ImageDataset, n: int, c: int, size: int) -> None:
    """The dataset contract: float (C, H, W) in [-1, 1] items, int labels, consistent attributes."""
    assert len(ds) == n
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (n, c, size, size)
    assert ds.labels.dtype == torch.int64 and ds.labels.shape == (n,)
    assert (ds.channels, ds.image_size) == (c, size)
    assert ds.num_classes == len(ds.class_names)
    image, label = ds[0]
    assert image.dtype == torch.float32 and image.shape == (c, size, size)
    assert -1.0 <= image.min() and image.max() <= 1.0
    assert isinstance(label, int) and 0 <= label < ds.num_classes


# -- Fashion-MNIST ------------------------------------------------------------------------------


def write_idx(folder, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    """Write gzipped IDX files exactly as the Debian package lays them out."""
    n = len(labels)
    header = struct.pack(">IIII", 2051, n, 28, 28)
    (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(header + images.tobytes())
    )
    header = struct.pack(">II", 2049, n)
    (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(header + labels.tobytes())
    )


@pytest.fixture
def fmnist_dir(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 12), ("t10k", 5)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        write_idx(tmp_path, prefix, images, (np.arange(n) % 10).astype(np.uint8))
    monkeypatch.setenv("GENORDER_FASHION_MNIST_DIR", str(tmp_path))
    return tmp_path


def test_fashion_mnist_reads_idx_and_pads(fmnist_dir):
    ds = load_dataset("fashion-mnist")
    check_items(ds, 12, 1, 32)
    assert ds.class_names == FASHION_MNIST_CLASSES and ds.class_names[0] == "T-shirt/top"
    raw = np.frombuffer(
        gzip.open(fmnist_dir / "train-images-idx3-ubyte.gz").read(), np.uint8, offset=16
    )
    assert torch.equal(
        ds.images[:, 0, 2:30, 2:30], torch.from_numpy(raw.reshape(12, 28, 28).copy())
    )
    assert (
        ds.images[:, :, :2].sum() == 0 and ds.images[:, :, :, -2:].sum() == 0
    )  # padding = background
    assert ds[0][0][0, 0, 0] == -1.0
    assert ds.labels.tolist() == [i % 10 for i in range(12)]


def test_fashion_mnist_split_limit_and_size(fmnist_dir):
    assert len(load_dataset("fashion-mnist", split="test")) == 5
    ds = load_dataset("fashion-mnist", limit=3, image_size=16)
    check_items(ds, 3, 1, 16)


def test_fashion_mnist_missing_dir_names_the_install(tmp_path, monkeypatch):
    monkeypatch.setenv("GENORDER_FASHION_MNIST_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="apt-get install dataset-fashion-mnist") as info:
        load_dataset("fashion-mnist")
    assert "GENORDER_FASHION_MNIST_DIR" in str(info.value)


def test_fashion_mnist_corrupt_file(fmnist_dir):
    (fmnist_dir / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(UserError, match="cannot read"):
        load_dataset("fashion-mnist")


# -- image folders ------------------------------------------------------------------------------


def write_png(path, size=(40, 30), colour=(255, 0, 0)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def test_imagefolder_classes_resize_crop(tmp_path):
    write_png(tmp_path / "dogs" / "a.png", colour=(0, 255, 0))
    write_png(tmp_path / "dogs" / "b.jpg", colour=(0, 255, 0))
    write_png(tmp_path / "cats" / "c.png", (30, 50), colour=(255, 0, 0))
    (tmp_path / "cats" / "notes.txt").write_text("not an image")
    ds = load_dataset(f"imagefolder:{tmp_path}", image_size=16, holdout=0)  # every image, no held-out part
    check_items(ds, 3, 3, 16)
    assert ds.class_names == ["cats", "dogs"]
    assert ds.labels.tolist() == [0, 1, 1]
    assert ds.images[0, 0].min() > 250 and ds.images[0, 1].max() < 5  # the red cat
    assert load_dataset(f"imagefolder:{tmp_path}").image_size == 64  # default size


def test_imagefolder_split_folders_and_grey(tmp_path):
    for split, n in (("train", 3), ("test", 1)):
        for i in range(n):
            write_png(tmp_path / split / "only" / f"{i}.png")
    assert len(load_dataset(f"imagefolder:{tmp_path}", split="train", image_size=8)) == 3
    test = load_dataset(f"imagefolder:{tmp_path}", split="test", image_size=8)
    assert len(test) == 1
    grey = registry_create("imagefolder", arg=str(tmp_path), image_size=8, channels=1)
    check_items(grey, 3, 1, 8)


def registry_create(name: str, **options):
    from genorder.registry import registry

    return registry("datasets").create(name, options)


def test_imagefolder_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_dataset(f"imagefolder:{tmp_path / 'missing'}")
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(UserError, match="no images"):
        load_dataset(f"imagefolder:{tmp_path / 'empty'}")
    with pytest.raises(UserError, match="needs a path"):
        load_dataset("imagefolder")
    (tmp_path / "bad" / "cls").mkdir(parents=True)
    (tmp_path / "bad" / "cls" / "x.png").write_bytes(b"garbage")
    with pytest.raises(UserError, match="cannot read image"):
        load_dataset(f"imagefolder:{tmp_path / 'bad'}")


# -- npz ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape,channels",
    [((6, 8, 8), 1), ((6, 8, 8, 3), 3), ((6, 3, 8, 8), 3), ((6, 8, 8, 1), 1), ((6, 1, 8, 8), 1)],
)
def test_npz_layouts(tmp_path, shape, channels):
    images = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    np.savez(tmp_path / "d.npz", images=images, labels=np.array([0, 1, 2, 0, 1, 2]))
    ds = load_dataset(f"npz:{tmp_path / 'd.npz'}")
    check_items(ds, 6, channels, 8)
    assert ds.num_classes == 3
    if len(shape) == 4 and shape[-1] == 3:  # NHWC is transposed, not reinterpreted
        assert torch.equal(ds.images[2, :, 3, 4], torch.from_numpy(images[2, 3, 4]))


def test_npz_no_labels_test_split_and_resize(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(
        path,
        images=np.zeros((4, 8, 8), np.uint8),
        test_images=np.full((2, 8, 8), 255, np.uint8),
        test_labels=np.array([3, 1]),
    )
    train = load_dataset(f"npz:{path}")
    assert train.num_classes == 4 and train.labels.tolist() == [0, 0, 0, 0]
    test = load_dataset(f"npz:{path}", split="test", image_size=16)
    check_items(test, 2, 1, 16)
    assert test.labels.tolist() == [3, 1] and test[0][0].min() == 1.0

    np.savez(path, images=np.zeros((4, 8, 8), np.uint8))
    only = load_dataset(f"npz:{path}")
    assert only.num_classes == 1 and only.class_names == ["0"]


@pytest.mark.parametrize(
    "arrays,match",
    [
        ({"images": np.zeros((2, 8, 8), np.float32)}, "must be uint8"),
        ({"images": np.zeros((2, 8), np.uint8)}, "has shape"),
        ({"images": np.zeros((2, 8, 6), np.uint8)}, "square"),
        ({"pixels": np.zeros((2, 8, 8), np.uint8)}, "no 'images' array"),
        ({"images": np.zeros((2, 8, 8), np.uint8), "labels": np.zeros(3, np.int64)}, "labels"),
        ({"images": np.zeros((2, 8, 8), np.uint8), "labels": np.zeros(2, np.float32)}, "integers"),
        ({"images": np.zeros((2, 8, 8), np.uint8), "labels": np.array([0, -1])}, "negative"),
        ({"images": np.zeros((2, 8, 8), np.uint8), "labels": np.array([0, 1_000_000])}, "1,000,001 classes"),
        ({"images": np.zeros((2, 8, 8), np.uint8), "labels": np.array([0, 2]), "class_names": np.array(["a", "b"])},
         "lists 2 class_names"),
    ],
)
def test_npz_validation(tmp_path, arrays, match):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(UserError, match=match):
        load_dataset(f"npz:{tmp_path / 'd.npz'}")


def test_labels_checked_against_num_classes():
    from genorder.data import MAX_CLASSES, check_labels

    check_labels(torch.tensor([0, 3]), 4, "d")
    with pytest.raises(UserError, match=r"labels span 0\.\.4, outside 0\.\.3"):
        check_labels(torch.tensor([0, 4]), 4, "d")
    with pytest.raises(UserError, match="classes"):
        check_labels(torch.tensor([0]), MAX_CLASSES + 1, "d")


def test_npz_truncated(tmp_path):
    np.savez(tmp_path / "d.npz", images=np.zeros((64, 8, 8), np.uint8), labels=np.zeros(64, np.int64))
    data = (tmp_path / "d.npz").read_bytes()
    (tmp_path / "d.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="cannot read"):
        load_dataset(f"npz:{tmp_path / 'd.npz'}")


def test_npz_not_a_file(tmp_path):
    (tmp_path / "x.npz").write_bytes(b"nope")
    with pytest.raises(UserError, match="cannot read"):
        load_dataset(f"npz:{tmp_path / 'x.npz'}")
    with pytest.raises(UserError, match="not found"):
        load_dataset(f"npz:{tmp_path / 'missing.npz'}")


# -- shapes -------------------------------------------------------------------------------------


def test_shapes_deterministic_and_split_dependent():
    a = load_dataset("shapes", limit=64)
    b = load_dataset("shapes", limit=64)
    check_items(a, 64, 3, 32)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert a.class_names == ["square", "circle", "triangle", "cross"]
    assert set(a.labels.tolist()) == {0, 1, 2, 3}
    test = load_dataset("shapes", split="test", limit=64)
    assert not torch.equal(a.images, test.images)
    assert torch.equal(load_dataset("shapes", limit=8).images, a.images[:8])  # limit = prefix
    check_items(load_dataset("shapes", limit=4, image_size=16), 4, 3, 16)


def test_shapes_default_sizes():
    assert len(load_dataset("shapes", split="test")) == 512


# -- registry lookup, loader, labels ------------------------------------------------------------


def test_unknown_dataset_lists_available():
    with pytest.raises(UserError) as info:
        load_dataset("cifar-99")
    msg = str(info.value)
    assert "cifar-99" in msg
    for name in ("fashion-mnist", "imagefolder", "npz", "shapes"):
        assert name in msg


def test_bad_options_and_specs():
    with pytest.raises(UserError, match="takes no argument"):
        load_dataset("shapes:foo")
    with pytest.raises(UserError, match="image_size"):
        load_dataset("shapes", image_size=0)
    with pytest.raises(UserError, match="split"):
        load_dataset("shapes", split="valid")
    assert parse_spec("npz:C:/x.npz") == ("npz", "C:/x.npz")
    assert parse_spec("shapes") == ("shapes", None)


def test_make_loader_is_endless_seeded_and_reshuffles():
    ds = load_dataset("shapes", limit=10)
    it = make_loader(ds, batch_size=4, seed=3)
    batches = [next(it) for _ in range(4)]  # 2 batches per epoch (drop_last), 2 epochs
    images, labels = batches[0]
    assert images.shape == (4, 3, 32, 32) and labels.shape == (4,) and labels.dtype == torch.int64
    assert images.dtype == torch.float32 and images.min() >= -1 and images.max() <= 1
    again = make_loader(ds, batch_size=4, seed=3)
    assert all(torch.equal(x, next(again)[0]) for x, _ in batches)
    epoch1 = torch.cat([b[0] for b in batches[:2]])
    epoch2 = torch.cat([b[0] for b in batches[2:]])
    assert not torch.equal(epoch1, epoch2)  # a new permutation each epoch


def test_make_loader_in_order_and_partial_batches():
    ds = load_dataset("shapes", limit=5)
    it = make_loader(ds, batch_size=2, shuffle=False, drop_last=False)
    sizes = [len(next(it)[1]) for _ in range(4)]
    assert sizes == [2, 2, 1, 2]
    first = next(make_loader(ds, batch_size=2, shuffle=False))[0]
    assert torch.equal(first[1], ds[1][0])


def test_make_loader_generic_dataset():
    data = [(torch.full((1, 2, 2), float(i)), i) for i in range(6)]
    images, labels = next(make_loader(data, batch_size=3, shuffle=False))
    assert images.shape == (3, 1, 2, 2) and labels.tolist() == [0, 1, 2]


def test_make_loader_too_small():
    with pytest.raises(UserError, match="batch size"):
        make_loader(load_dataset("shapes", limit=3), batch_size=8)


def test_class_balanced_labels():
    assert class_balanced_labels(3, 6).tolist() == [0, 0, 1, 1, 2, 2]
    labels = class_balanced_labels(10, 80)
    assert labels.dtype == torch.int64 and torch.equal(labels.bincount(), torch.full((10,), 8))
    assert class_balanced_labels(4, 2).tolist() == [0, 2]


def test_real_fashion_mnist_if_installed(monkeypatch):
    monkeypatch.delenv("GENORDER_FASHION_MNIST_DIR", raising=False)
    try:
        ds = load_dataset("fashion-mnist", split="test", limit=16)
    except UserError:
        pytest.skip("dataset-fashion-mnist is not installed")
    check_items(ds, 16, 1, 32)
