"""Every score's subset is seeded and class-balanced, and a folder without train/ and test/ gets a
seeded, class-balanced held-out split (issue 25, items 1 and 2), on a class-sorted folder."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from genorder.data import load_dataset
from genorder.errors import UserError
from genorder.subsets import balanced_split, balanced_subset, subset_of

K, PER_CLASS = 5, 20


def class_sorted_folder(root, k: int = K, per_class: int = PER_CLASS, size: int = 8) -> str:
    """PATH/c<k>/*.png, read back class by class; image i of class c has every pixel value
    (c * per_class + i) in its red channel, so a split's images can be told apart by content."""
    for c in range(k):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            img = np.zeros((size, size, 3), np.uint8)
            img[..., 0] = c * per_class + i
            img[..., 1] = 40 * c
            Image.fromarray(img).save(root / f"c{c}" / f"{i:03d}.png")
    return f"imagefolder:{root}"


def ids(ds) -> set[int]:
    return set(ds.images[:, 0, 0, 0].tolist())


def test_balanced_subset_of_sorted_labels():
    labels = torch.arange(K).repeat_interleave(PER_CLASS)  # (100,) sorted by class
    idx = balanced_subset(labels, 23, seed=0)
    assert len(idx) == 23 and len(set(idx.tolist())) == 23
    counts = Counter(labels[idx].tolist())
    assert set(counts) == set(range(K)) and max(counts.values()) - min(counts.values()) <= 1
    for m in (1, K, 7):  # every prefix is balanced too
        c = Counter(labels[idx[:m]].tolist())
        assert max(c.values()) - (min(c.values()) if len(c) == K else 0) <= 1
    assert torch.equal(idx, balanced_subset(labels, 23, seed=0))  # seeded
    assert not torch.equal(idx, balanced_subset(labels, 23, seed=1))
    assert idx.tolist() != list(range(23))  # not the first n


def test_balanced_subset_small_class_and_unlabelled():
    labels = torch.tensor([0] * 50 + [1] * 2 + [2] * 50)
    c = Counter(labels[balanced_subset(labels, 30)].tolist())
    assert c[1] == 2 and c[0] + c[2] == 28 and abs(c[0] - c[2]) <= 1  # the small class gives all it has
    assert len(balanced_subset(labels, 1000)) == len(labels)
    shuf = balanced_subset(None, 10, seed=3, total=100)
    assert len(set(shuf.tolist())) == 10 and shuf.tolist() != list(range(10))


def test_balanced_split():
    labels = torch.arange(K).repeat_interleave(PER_CLASS)
    train, test = balanced_split(labels, 0.1, seed=0)
    assert len(set(train.tolist()) & set(test.tolist())) == 0 and len(train) + len(test) == len(labels)
    assert Counter(labels[test].tolist()) == {c: 2 for c in range(K)}
    assert torch.equal(test, balanced_split(labels, 0.1, seed=0)[1])
    with pytest.raises(UserError):
        balanced_split(labels, 1.0)


def test_folder_without_splits_gets_a_held_out_split(tmp_path, monkeypatch):
    monkeypatch.delenv("GENORDER_HOLDOUT", raising=False)
    spec = class_sorted_folder(tmp_path / "photos")
    train = load_dataset(spec, "train", image_size=8)
    test = load_dataset(spec, "test", image_size=8)
    assert len(test) == K * 2 and len(train) == K * (PER_CLASS - 2)
    assert ids(train).isdisjoint(ids(test))  # held out: no test image is a training image
    assert Counter(test.labels.tolist()) == {c: 2 for c in range(K)}  # class-balanced
    assert test.split_info == {"source": "held out", "holdout": 0.1, "seed": 0, "train": 90, "test": 10}
    assert ids(test) == ids(load_dataset(spec, "test", image_size=8))  # seeded: the same split every time
    # the explicit switch: no held-out split, both splits are every image (and the record says so)
    off = load_dataset(spec, "test", image_size=8, holdout=0)
    assert len(off) == K * PER_CLASS and off.split_info["source"] == "training images"
    monkeypatch.setenv("GENORDER_HOLDOUT", "0")
    assert len(load_dataset(spec, "test", image_size=8)) == K * PER_CLASS
    monkeypatch.setenv("GENORDER_HOLDOUT", "0.25")
    assert len(load_dataset(spec, "test", image_size=8)) == K * 5
    monkeypatch.setenv("GENORDER_HOLDOUT", "2")
    with pytest.raises(UserError, match="GENORDER_HOLDOUT"):
        load_dataset(spec, "test", image_size=8)


def test_folder_limit_is_class_balanced(tmp_path):
    spec = class_sorted_folder(tmp_path / "photos")
    ds = load_dataset(spec, "train", image_size=8, limit=10)
    assert Counter(ds.labels.tolist()) == {c: 2 for c in range(K)}


def test_subset_of_a_class_sorted_folder(tmp_path):
    spec = class_sorted_folder(tmp_path / "photos")
    ds = load_dataset(spec, "train", image_size=8)
    images, labels = subset_of(ds, 10)
    assert images.shape == (10, 3, 8, 8) and Counter(labels.tolist()) == {c: 2 for c in range(K)}
    assert torch.equal(labels, ds.labels[balanced_subset(ds.labels, 10)])
    # the images match their labels (the green channel encodes the class)
    assert torch.equal(images[:, 1, 0, 0].long(), 40 * labels)


def test_disjoint_subsets_for_the_reported_and_the_tuned_held_out_loss():
    from genorder.subsets import disjoint_subsets

    labels = torch.arange(K).repeat_interleave(PER_CLASS)
    a, b = disjoint_subsets(labels, 30)
    assert len(a) == len(b) == 30 and set(a.tolist()).isdisjoint(b.tolist())
    for idx in (a, b):
        c = Counter(labels[idx].tolist())
        assert set(c) == set(range(K)) and max(c.values()) - min(c.values()) <= 1
    a, b = disjoint_subsets(labels, 80)  # not enough for two: both balanced, overlapping
    assert len(a) == len(b) == 80
