"""The class-consistency classifier: accuracy on real Fashion-MNIST, content-keyed cache, npz and
imagefolder datasets, bootstrap intervals."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from genorder.classifier import (
    Classifier,
    ClassifierConfig,
    class_accuracy,
    evaluate,
    load_or_train_classifier,
)
from genorder.data import load_dataset, render_shapes

# The Fashion-MNIST classifier takes about a minute to train on two cores: it is trained once and
# kept in a content-keyed cache (a changed dataset, config or budget trains a new one), so the test
# below re-scores a cached classifier on the real test images on later runs.
CACHE = Path(os.environ.get("GENORDER_TEST_CACHE", Path(__file__).resolve().parents[1] / ".pytest_cache" / "genorder"))
TINY = ClassifierConfig(width=8, hidden=16, epochs=2, batch_size=32)


def _fmnist_available() -> bool:
    try:
        load_dataset("fashion-mnist", "test", limit=1)
    except Exception:
        return False
    return True


@pytest.mark.skipif(not _fmnist_available(), reason="Fashion-MNIST is not installed")
def test_fashion_mnist_classifier_above_90_percent_on_real_test_images():
    clf, info = load_or_train_classifier("fashion-mnist", cache_root=CACHE / "classifiers")
    test = load_dataset("fashion-mnist", "test")
    acc = evaluate(clf, test.images, test.labels)  # re-measured here, not read from the cache
    assert acc > 0.90, f"classifier accuracy {acc:.4f} on the 10,000 real test images"
    assert info["test_accuracy"] == pytest.approx(acc, abs=1e-6)
    assert Path(info["path"]).is_file() and info["path"].endswith(".safetensors")
    # a second call reuses the cache and gives the same network
    clf2, info2 = load_or_train_classifier("fashion-mnist", cache_root=CACHE / "classifiers")
    assert info2["reused"] and info2["path"] == info["path"]
    assert torch.equal(clf2.predict(test.images[:256]), clf.predict(test.images[:256]))
    # scoring real images as if they were samples of their own class
    m = class_accuracy(clf, test.images[:500], test.labels[:500], n_boot=200)
    assert m["n"] == 500 and m["lo"] <= m["acc"] <= m["hi"] and m["acc"] > 0.85


def _write_shapes_npz(path: Path, seed: int = 1) -> None:
    train, ytrain = render_shapes(256, 16, seed)
    test, ytest = render_shapes(128, 16, seed + 100)
    np.savez(path, images=train.numpy(), labels=ytrain.numpy(), test_images=test.numpy(), test_labels=ytest.numpy())


def test_npz_classifier_learns_and_stale_cache_is_rebuilt(tmp_path):
    data = tmp_path / "shapes.npz"
    _write_shapes_npz(data)
    spec = f"npz:{data}"
    root = tmp_path / "cache"
    cfg = ClassifierConfig(width=8, hidden=32, epochs=6, batch_size=32)
    clf, info = load_or_train_classifier(spec, cache_root=root, config=cfg)
    assert not info["reused"]
    assert Path(info["path"]).parent.name.startswith("npz-shapes-")
    assert info["test_accuracy"] > 0.5  # 4 classes: chance is 0.25

    _, again = load_or_train_classifier(spec, cache_root=root, config=cfg)
    assert again["reused"] and again["path"] == info["path"] and again["dataset_hash"] == info["dataset_hash"]

    # same file name, other content: the cache must not be reused
    _write_shapes_npz(data, seed=2)
    _, changed = load_or_train_classifier(spec, cache_root=root, config=cfg)
    assert not changed["reused"]
    assert changed["dataset_hash"] != info["dataset_hash"] and changed["path"] != info["path"]

    # another training budget is another cache entry
    _, longer = load_or_train_classifier(spec, cache_root=root, config=cfg.model_copy(update={"epochs": 7}))
    assert not longer["reused"] and longer["path"] != changed["path"]


def test_corrupt_cache_entry_is_rebuilt(tmp_path):
    data = tmp_path / "shapes.npz"
    _write_shapes_npz(data)
    spec, root = f"npz:{data}", tmp_path / "cache"
    _, info = load_or_train_classifier(spec, cache_root=root, config=TINY)
    path = Path(info["path"])
    state = path.read_bytes()
    path.write_bytes(state[:-8] + bytes(8))  # flip the last weights' bytes
    _, rebuilt = load_or_train_classifier(spec, cache_root=root, config=TINY)
    assert not rebuilt["reused"] and rebuilt["path"] == info["path"]
    assert path.read_bytes() == state  # deterministic training gives back the same bytes


def test_imagefolder_dataset_with_labels(tmp_path):
    from PIL import Image

    images, labels = render_shapes(96, 16, 3)
    for i, (im, y) in enumerate(zip(images, labels)):
        folder = tmp_path / "imgs" / f"class{int(y)}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(im.permute(1, 2, 0).numpy()).save(folder / f"{i}.png")
    clf, info = load_or_train_classifier(f"imagefolder:{tmp_path / 'imgs'}", cache_root=tmp_path / "c", config=TINY)
    assert clf.channels == 3 and clf.num_classes == 4 and clf.image_size == 64  # imagefolder's default size
    assert info["path"].startswith(str(tmp_path / "c" / "imagefolder-imgs-"))
    x = torch.rand(5, 3, 32, 32) * 2 - 1  # other sizes are resized
    assert clf(x).shape == (5, 4) and clf.predict(x).dtype == torch.int64


class _Fixed(torch.nn.Module):
    """Predicts a given class per image (the image's first pixel holds it)."""

    def predict(self, images, batch_size=256):
        return images[:, 0, 0, 0].long()


def test_class_accuracy_and_bootstrap_interval():
    labels = torch.arange(200) % 10
    pred = labels.clone()
    pred[:40] = (pred[:40] + 1) % 10  # 160 of 200 right
    images = pred.float().view(-1, 1, 1, 1).expand(-1, 1, 2, 2)
    m = class_accuracy(_Fixed(), images, labels, n_boot=2000, seed=0)
    assert m["acc"] == pytest.approx(0.8) and m["n"] == 200
    # binomial standard error sqrt(.8 * .2 / 200) = 0.028: the 95% interval is about +-0.055
    assert 0.73 < m["lo"] < 0.77 and 0.83 < m["hi"] < 0.87
    assert class_accuracy(_Fixed(), images, labels, n_boot=2000, seed=0) == m
    perfect = class_accuracy(_Fixed(), images, pred)
    assert perfect["acc"] == perfect["lo"] == perfect["hi"] == 1.0


def test_classifier_rejects_wrong_channels():
    from genorder.errors import UserError

    clf = Classifier(1, 10, 32, TINY)
    with pytest.raises(UserError):
        clf(torch.zeros(2, 3, 32, 32))


def test_image_size_reaches_the_classifier_and_its_cache_key(tmp_path):
    """The classifier judges samples at the size the run trained on: trained on the dataset resized
    to `image_size`, cached under a key (and folder) holding that size."""
    data = tmp_path / "shapes.npz"
    _write_shapes_npz(data)
    cfg = ClassifierConfig(width=8, hidden=32, epochs=1, batch_size=32)
    root = tmp_path / "cache"
    clf16, info16 = load_or_train_classifier(f"npz:{data}", cache_root=root, config=cfg)
    clf8, info8 = load_or_train_classifier(f"npz:{data}", cache_root=root, config=cfg, image_size=8)
    assert clf16.image_size == 16 and clf8.image_size == 8 and info8["image_size"] == 8
    assert info8["path"] != info16["path"] and "-8px-" in info8["path"] and "-16px-" in info16["path"]
    assert info8["dataset_hash"] != info16["dataset_hash"] and not info8["reused"]
    again, info = load_or_train_classifier(f"npz:{data}", cache_root=root, config=cfg, image_size=8)
    assert info["reused"] and info["path"] == info8["path"] and again.image_size == 8
