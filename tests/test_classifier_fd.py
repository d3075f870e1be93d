"""Classifier-feature distribution metrics: the features are the penultimate layer, FD of a set with
itself is ~0 and grows with a planted shift, the batched FD equals genorder.metrics' FID formula,
precision/recall react to a shift, the floor is computed at the same n, everything deterministic."""

from __future__ import annotations

import pytest
import torch

from genorder.classifier import Classifier, ClassifierConfig
from genorder.classifier_fd import (
    FrechetToReference,
    classifier_features,
    classifier_floor,
    classifier_metrics,
)
from genorder.data import render_shapes
from genorder.errors import UserError
from genorder.metrics import fid_from_features
from genorder.testing import one_thread

TINY = ClassifierConfig(width=8, hidden=16, pool_to=4)


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def _clf() -> Classifier:
    torch.manual_seed(0)
    return Classifier(3, 4, 16, TINY).eval()  # random weights: a fixed feature map is all these tests need


def test_features_are_the_penultimate_layer_and_deterministic():
    clf = _clf()
    images, _ = render_shapes(64, 16, seed=0)  # (64, 3, 16, 16) uint8
    f = classifier_features(clf, images, batch_size=10)
    assert f.shape == (64, TINY.hidden) and f.dtype == torch.float32 and (f >= 0).all()  # after ReLU
    assert torch.equal(f, classifier_features(clf, images, batch_size=64))
    with torch.no_grad():
        logits = clf(images.float().div(127.5).sub(1))
    torch.testing.assert_close(clf.logits_from_penultimate(f), logits, rtol=1e-5, atol=1e-5)


def test_fd_with_itself_is_zero_and_grows_with_a_planted_shift():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(5000, 16, generator=g) @ torch.randn(16, 16, generator=g)  # correlated features
    fd = FrechetToReference(real)
    assert abs(float(fd(real[None])[0])) < 1e-6 * fd.trace
    shifts = [0.0, 0.1, 0.3, 1.0]
    vals = [float(fd((real + s)[None])[0]) for s in shifts]  # a mean shift of s in every dimension
    assert vals == sorted(vals) and vals[-1] > 10 * vals[1]
    assert vals[-1] == pytest.approx(16 * 1.0**2, rel=1e-6)  # a pure mean shift adds ||delta||^2
    scaled = float(fd((1.5 * real)[None])[0])  # covariance change
    assert scaled > 0.1 * fd.trace


def test_batched_fd_equals_the_metrics_formula():
    g = torch.Generator().manual_seed(1)
    real = torch.randn(800, 12, generator=g)
    fakes = torch.randn(3, 300, 12, generator=g) * torch.tensor([1.0, 1.2, 0.8])[:, None, None] + 0.1
    batched = FrechetToReference(real)(fakes)
    for r in range(3):
        assert float(batched[r]) == pytest.approx(fid_from_features(fakes[r], real), rel=1e-6, abs=1e-8)


def test_precision_recall_and_floor_at_the_same_n():
    clf = _clf()
    train, train_labels = render_shapes(1200, 16, seed=1)
    test, _ = render_shapes(1000, 16, seed=2)
    real_MD = classifier_features(clf, test)
    floor = classifier_floor(clf, train, real_MD, n=1000, labels=train_labels)
    assert floor["n"] == 1000 and floor["ref_n"] == 1000
    assert floor == classifier_floor(clf, train, real_MD, n=1000, labels=train_labels)  # deterministic
    from genorder.subsets import balanced_subset

    picked = balanced_subset(train_labels, 1000)  # a seeded class-balanced n, not train[:n]
    direct = classifier_metrics(classifier_features(clf, train[picked]), real_MD)
    assert direct == floor  # scored like generated images
    # a set unlike the reference (inverted colours): farther than the floor, lower precision
    off = classifier_metrics(classifier_features(clf, 255 - train[:1000]), real_MD)
    assert off["fd"] > 5 * floor["fd"]
    assert floor["precision"] > 0.5 and off["precision"] < floor["precision"] - 0.3
    assert floor["warnings"] and "5000" in floor["warnings"][0]  # n = 1000 is below the intended size
    with pytest.raises(UserError, match="train images"):
        classifier_floor(clf, train, real_MD, n=5000)
