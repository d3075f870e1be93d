"""The paired design and the paired probe on a tiny trained regime (noisy class templates of 4x4
tokens through a stub tokenizer, a raster model trained for 80 steps, a tiny class-consistency CNN):

* the design gives every order the same labels and per-sample seeds, prefix-stable;
* `generate_design`: an image depends on its own index only (prefixes, block = 1 alone);
* the probe gives the same per-sample results at two batch sizes;
* the statistics validated on generated samples: an A/A test (one model's samples split into two
  sets of seed sets, 40 replicate pairs: the interval of the difference covers 0 in about 95%)
  and a planted effect (the same model at temperature 1.0 against 1.6) detected."""

from __future__ import annotations

import math

import pytest
import torch

from genorder import StandardSampler
from genorder.classifier import ClassifierConfig, train_classifier
from genorder.classifier_fd import FrechetToReference, classifier_features
from genorder.errors import UserError
from genorder.images import to_uint8
from genorder.model import build_model
from genorder.paired import label_matched_split, paired_design, sample_seed
from genorder.quality import PairedProbe
from genorder.registry import registry
from genorder.sampling import generate_design
from genorder.testing import (
    TinyCodebookTokenizer,
    masked_ce,
    one_thread,
    tensor_dataset,
    tiny_backbone,
)
from genorder.validation import aa_check, planted_check, score_design

K = 4
NOISE = 6  # token noise: classes overlap, so the classifier scores about 74% on real data


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def _sampler(temperature: float = 1.0) -> StandardSampler:
    return StandardSampler(StandardSampler.Config(temperature=temperature))


def _data(tok, templates_KL: torch.Tensor, n: int, seed: int):
    """n token maps (4x4 over 16 levels): class i mod K's template plus uniform noise of ±NOISE,
    and their decoded 8 px images (uint8)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % K
    noise = torch.randint(-NOISE, NOISE + 1, (n, templates_KL.shape[1]), generator=g)
    tokens = (templates_KL[labels] + noise).clamp(0, tok.codebook_size - 1)
    with torch.no_grad():
        return tokens, to_uint8(tok.decode([tokens])), labels


@pytest.fixture(scope="module")
def regime():
    """(order, tokenizer, model, classifier, train_u8, test_u8): a raster model trained for 80
    steps of 64 on 2,048 noisy class templates, and a class-consistency CNN trained on them."""
    with one_thread():
        torch.manual_seed(0)
        tok = TinyCodebookTokenizer((4,), 16, image_size=8, channels=1)
        templates = torch.randint(5, 11, (K, 16), generator=torch.Generator().manual_seed(0))
        tokens, train_u8, labels = _data(tok, templates, 2048, seed=1)
        _, test_u8, _ = _data(tok, templates, 1024, seed=2)
        clf = train_classifier(tensor_dataset(train_u8, labels),
                               ClassifierConfig(width=8, hidden=16, pool_to=4, epochs=2, batch_size=64))
        order = registry("orders").create("raster", {})
        model = build_model(order, tok, tiny_backbone(width=32), K)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        g = torch.Generator().manual_seed(0)
        for _ in range(80):
            idx = torch.randint(0, len(tokens), (64,), generator=g)
            batch = order.training_batch([tokens[idx]], tok, g)
            loss = masked_ce(model(batch.inputs, labels[idx]), batch.targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
    return order, tok, model, clf, train_u8, test_u8


def test_design_same_labels_and_seeds_for_every_caller_and_prefix_stable():
    labels, seeds = paired_design(10, 2000, seed=3)
    assert torch.equal(torch.bincount(labels), torch.full((10,), 200))
    again = paired_design(10, 2000, seed=3)
    assert torch.equal(again[0], labels) and torch.equal(again[1], seeds)
    short = paired_design(10, 500, seed=3)
    assert torch.equal(short[0], labels[:500]) and torch.equal(short[1], seeds[:500])
    other = paired_design(10, 2000, seed=4)[1]
    assert len(set(seeds.tolist())) == 2000 and not set(seeds.tolist()) & set(other.tolist())
    assert int(seeds[7]) == sample_seed(3, 7) and 0 <= int(seeds.min())


def test_indexed_images_depend_on_their_own_index_only(regime):
    order, tok, model, *_ = regime
    labels, seeds = paired_design(K, 40, seed=0)
    full = generate_design(order, model, tok, labels, seeds, _sampler(), block=10)
    prefix = generate_design(order, model, tok, labels[:20], seeds[:20], _sampler(), block=10)
    assert torch.equal(full[:20], prefix)
    assert not torch.equal(full[:10], full[10:20])  # the blocks do draw different numbers
    alone = generate_design(order, model, tok, labels[5:6], seeds[5:6], _sampler(), block=1)
    per_sample = generate_design(order, model, tok, labels[:8], seeds[:8], _sampler(), block=1)
    assert torch.equal(per_sample[5:6], alone)


def test_probe_per_sample_results_do_not_depend_on_the_batch_size(regime):
    order, tok, model, clf, train_u8, test_u8 = regime
    probe = PairedProbe.build(clf, test_u8, train_u8, _sampler(), n=200, block=50, batch_size=64)
    a = probe(order, tok, model)
    probe.batch_size = 17
    b = probe(order, tok, model)
    assert torch.equal(a.correct, b.correct) and torch.equal(a.labels, b.labels)
    torch.testing.assert_close(a.features, b.features, rtol=1e-5, atol=1e-6)
    assert a.metrics["class_acc"] == b.metrics["class_acc"]
    assert a.metrics["classifier_fd"]["fd"] == pytest.approx(b.metrics["classifier_fd"]["fd"], rel=1e-5)
    m = a.metrics
    assert m["floor"]["n"] == 200 == m["classifier_fd"]["n"]  # the floor at the same n
    assert len(m["per_class_acc"]) == K and all(0 <= p <= 1 for p in m["per_class_acc"])
    assert math.isclose(sum(m["per_class_acc"]) / K, m["class_acc"])  # 50 per class
    assert 0.5 < m["class_acc"] < 0.95, "the tiny regime draws its classes, not perfectly (chance is 0.25)"
    assert len(a.summary()["correct"]) == 200


def _score(regime, n: int, seed: int, temperature: float = 1.0):
    order, tok, model, clf, *_ = regime
    return score_design(order, tok, model, clf, _sampler(temperature), n, seed, block=50)


def test_label_matched_split_pairs_labels_without_replacement():
    labels = paired_design(K, 400, 0)[0]
    idx = label_matched_split(labels, K, 2, 3, 20, torch.Generator().manual_seed(0))
    assert idx.shape == (2, 3, 20) and len(set(idx.flatten().tolist())) == 120
    assert torch.equal(labels[idx][0], labels[idx][1])  # arm A and arm B: the same label per slot
    assert torch.equal(labels[idx][0, 0], torch.arange(20) % K)
    with pytest.raises(UserError, match="pool"):
        label_matched_split(labels, K, 2, 3, 100, torch.Generator())


def test_a_a_on_generated_samples_covers_zero_in_about_95_percent(regime):
    """One model's 2,400 samples (about 70% correct), resampled into two arms of 3 seed sets of 100
    (paired by label) per replicate pair; 40 pairs. Expected coverage 95%: 38 of 40, binomial sd
    1.4; the test allows 34."""
    real = FrechetToReference(classifier_features(regime[3], regime[5]))
    out = aa_check(_score(regime, 2400, seed=10), real, num_classes=K, seeds=3, per_seed=100, pairs=40)
    for metric, m in out["metrics"].items():
        assert m["covered"] >= 34, f"A/A {metric}: the interval covered 0 in {m['covered']} of 40"
    assert out["pool"] == 2400 and out["binomial_se"] == pytest.approx(math.sqrt(0.05 * 0.95 / 40))


def test_planted_effect_temperature_1_against_1_6_is_detected(regime):
    real = FrechetToReference(classifier_features(regime[3], regime[5]))
    cold = [_score(regime, 600, seed=s, temperature=1.0) for s in range(5)]
    hot = [_score(regime, 600, seed=s, temperature=1.6) for s in range(5)]  # same labels and seeds
    assert all(torch.equal(c[0], h[0]) for c, h in zip(cold, hot, strict=True))
    out = planted_check(cold, hot, real)
    assert out["class_acc"]["verdict"] == "better", out["class_acc"]
    assert out["classifier_fd"]["verdict"] == "better", out["classifier_fd"]  # lower FD at temperature 1.0
    assert out["class_acc"]["diff"]["estimate"] > out["class_acc"]["mdd"]
