"""The papers' FID protocol offline: ADM-format sample and reference batches (`genorder.adm`), and
`genorder eval --samples S.npz --ref-batch REF.npz`. A small reference batch is built in ADM's
format; FID from its precomputed mu/sigma equals FID from its images (and torch-fidelity's FID on
the same features); bad batches are clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from genorder.adm import read_reference, read_samples, write_samples
from genorder.errors import UserError
from genorder.sampling import chunks, image_seed

pytest.importorskip("torch_fidelity")

from genorder_cli.main import app

from genorder import metrics

runner = CliRunner()


def images(n: int, seed: int, shift: float = 0.0) -> np.ndarray:
    """uint8 (n, 3, 32, 32): smooth random colour fields (not noise), `shift` brightens them."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g)
    x = torch.nn.functional.interpolate(low, size=32, mode="bilinear", align_corners=False) + shift
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def test_sample_batch_round_trip_and_seeds():
    x = images(5, 0)
    lab = np.arange(5)
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        p = write_samples(Path(d) / "s.npz", x, lab)
        with np.load(p) as z:
            assert z["arr_0"].shape == (5, 32, 32, 3) and z["arr_0"].dtype == np.uint8
            assert np.array_equal(z["arr_0"][2, 3, 4], x[2, :, 3, 4])  # NHWC of the same pixel
        back, back_lab = read_samples(p)
        assert np.array_equal(back, x) and np.array_equal(back_lab, lab)
    assert chunks(7, 3) == [(0, 3), (3, 6), (6, 7)]
    seeds = {image_seed(s, i) for s in range(3) for i in range(50)}
    assert len(seeds) == 150 and all(0 <= v < 2**63 for v in seeds)


@pytest.fixture()
def batches(tmp_path):
    ref = images(80, 1)
    fake = images(60, 2, shift=0.1)
    feats = metrics.extract_features(torch.from_numpy(ref), metrics.TINY).double().numpy()
    mu, sigma = feats.mean(0), np.cov(feats, rowvar=False)  # computed here, independently of genorder.adm
    nhwc = np.ascontiguousarray(ref.transpose(0, 2, 3, 1))
    np.savez(tmp_path / "ref_stats.npz", mu=mu, sigma=sigma)
    np.savez(tmp_path / "ref_images.npz", arr_0=nhwc)
    np.savez(tmp_path / "ref_both.npz", arr_0=nhwc, mu=mu, sigma=sigma)
    write_samples(tmp_path / "samples.npz", fake, np.zeros(len(fake), dtype=np.int64))
    return tmp_path, ref, fake


def eval_json(d, ref_name: str) -> dict:
    r = runner.invoke(app, ["eval", "--samples", str(d / "samples.npz"), "--ref-batch", str(d / ref_name),
                            "--extractor", metrics.TINY, "--device", "cpu", "--out", str(d / f"{ref_name}.json")])  # fmt: skip
    assert r.exit_code == 0, r.output
    return json.loads((d / f"{ref_name}.json").read_text())["metrics"]


def test_fid_from_mu_sigma_equals_fid_from_images(batches):
    d, ref, fake = batches
    stats, imgs, both = eval_json(d, "ref_stats.npz"), eval_json(d, "ref_images.npz"), eval_json(d, "ref_both.npz")
    assert stats["fid_source"] == "reference mu/sigma" and imgs["fid_source"] == "reference images"
    assert stats["fid"] > 0.05  # not zero: the brightened samples differ from the reference
    assert stats["fid"] == pytest.approx(imgs["fid"], rel=1e-9)
    assert both["fid"] == pytest.approx(both["fid_from_images"], rel=1e-9) == pytest.approx(stats["fid"], rel=1e-9)
    # precision/recall only where the reference holds images
    assert "precision" not in stats and 0 <= imgs["precision"] <= 1 and 0 <= imgs["recall"] <= 1
    assert stats["isc"] is None and stats["sfid"] is None and "mixed_6" in stats["sfid_reason"]
    # the same number as torch-fidelity's FID on the same features
    fa = metrics.extract_features(torch.from_numpy(fake), metrics.TINY)
    fr = metrics.extract_features(torch.from_numpy(ref), metrics.TINY)
    tf = metrics.metrics_from_features(fa, fr, kid=False, prc=False)["fid"]
    assert stats["fid"] == pytest.approx(tf, rel=1e-4)


def test_bad_reference_batches_are_clear_errors(batches):
    d, _, _ = batches
    np.savez(d / "only_mu.npz", mu=np.zeros(64))
    np.savez(d / "empty.npz", x=np.zeros(3))
    np.savez(d / "wrong_dim.npz", mu=np.zeros(2048), sigma=np.eye(2048))
    for name, msg in (("only_mu.npz", "only one of 'mu' and 'sigma'"), ("empty.npz", "neither"),
                      ("wrong_dim.npz", "not in the same space"), ("missing.npz", "not found")):  # fmt: skip
        r = runner.invoke(app, ["eval", "--samples", str(d / "samples.npz"), "--ref-batch", str(d / name),
                                "--extractor", metrics.TINY, "--device", "cpu"])  # fmt: skip
        assert r.exit_code == 2 and "error:" in r.output and msg in " ".join(r.output.split()), (name, r.output)
    with pytest.raises(UserError):
        read_reference(d / "empty.npz")
