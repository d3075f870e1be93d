"""Zero-shot editing (`genorder edit`, `Order.can_edit` / `Order.edit`): masks reach each token map
as VAR's notebook does (bilinear, > 0.5 keeps, maps of <= 3 tokens kept whole); every order that
edits returns the image's own tokens exactly where they are kept; raster refuses what is not a
raster-order prefix and says why; the command runs end to end on tiny trained runs and on an
imported official VAR run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import CallRecorder, TinyCodebookTokenizer, TinyLatentTokenizer, one_thread, tiny_backbone
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

from genorder.editing import box_region, keep_maps, parse_mask
from genorder.errors import UserError
from genorder.generation import make_generator
from genorder.layout import TokenLayout
from genorder.model import build_model
from genorder.order import Order
from genorder.registry import registry
from genorder_cli.app import console
from genorder_cli.main import app

FIXTURE = Path(__file__).parent / "data" / "var_official_small.safetensors"


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], terminal_width=200)


# -- masks ------------------------------------------------------------------------------------------


def test_named_and_box_masks():
    c = parse_mask("center", 16)
    assert c.shape == (16, 16) and c.sum() == 64 and c[4:12, 4:12].all() and c[:4].sum() == 0
    assert parse_mask("bottom", 8)[4:].all() and parse_mask("bottom", 8)[:4].sum() == 0
    assert parse_mask("left", 8)[:, :4].all() and parse_mask("left", 8)[:, 4:].sum() == 0
    assert torch.equal(parse_mask("0.5,0,1,1", 8), parse_mask("right", 8))
    assert torch.equal(parse_mask("0,0,1,0.5", 8), parse_mask("top", 8))


def test_png_mask_white_regenerates(tmp_path):
    arr = np.zeros((32, 32), dtype=np.uint8)
    arr[:, 16:] = 255
    Image.fromarray(arr).save(tmp_path / "m.png")
    m = parse_mask(str(tmp_path / "m.png"), 16)
    assert torch.equal(m > 0.5, parse_mask("right", 16) > 0.5)


@pytest.mark.parametrize("bad", ["middle", "0.5,0.5,0.2,1", "a,b,c,d", "missing.png"])
def test_bad_masks_are_user_errors(bad):
    with pytest.raises(UserError, match="--mask"):
        parse_mask(bad, 16)


def test_mask_downsampling_is_bilinear_then_threshold_with_tiny_maps_kept_whole():
    region = parse_mask("center", 16)  # pixels 4..11 regenerated
    keep = keep_maps(region, TokenLayout((1, 2, 4, 16)))
    assert keep[0].tolist() == [True]  # 1 token <= 3: kept whole although the centre is masked
    # 2x2: bilinear samples at pixel (3.5, 3.5): three of the four neighbours kept -> 0.75 -> kept
    assert keep[1].tolist() == [True] * 4
    # 4x4: samples at 1.5, 5.5, 9.5, 13.5 -> the outer ring is kept, the centre 2x2 regenerated
    ring = torch.ones(4, 4, dtype=torch.bool)
    ring[1:3, 1:3] = False
    assert torch.equal(keep[2], ring.flatten())
    assert torch.equal(keep[3], (region < 0.5).flatten())  # at full resolution: the mask itself
    # a one-pixel column (pixel 5): bilinear at 5.5 gives 0.5, not > 0.5 -> that token column is
    # regenerated, where an area average (0.75) or nearest (pixel 4) would keep it
    col = keep_maps(box_region((5 / 16, 0.0, 6 / 16, 1.0), 16), TokenLayout((4,)))[0].reshape(4, 4)
    assert (~col[:, 1]).all() and col[:, [0, 2, 3]].all()
    # the rule, literally, for an off-grid box
    r = box_region((0.1, 0.3, 0.65, 0.9), 16)
    for p, k in zip((2, 4, 16), keep_maps(r, TokenLayout((2, 4, 16)))):
        want = F.interpolate((1 - r)[None, None], size=(p, p), mode="bilinear", align_corners=False)[0, 0] > 0.5
        assert torch.equal(k, want.flatten())


# -- orders -----------------------------------------------------------------------------------------


def _setup(order_name: str, options=None, single=(4,)):
    order = registry("orders").create(order_name, options or {})
    tok = TinyLatentTokenizer((1, 2, 4), 16) if order.tokenizer_kind == "multi-scale" else TinyCodebookTokenizer(single, 16)
    torch.manual_seed(0)
    model = build_model(order, tok, tiny_backbone(), num_classes=3).eval()
    images = torch.rand(3, 1, 8, 8) * 2 - 1
    return order, tok, model, images


def _sampler(**kw):
    return registry("samplers").create("standard", {"cfg": 1.5, **kw})


@pytest.mark.parametrize("order_name", ["next-scale", "maskgit"])
def test_kept_tokens_are_exactly_the_images_own(order_name):
    order, tok, model, images = _setup(order_name)
    layout = order.layout(tok)
    keep = keep_maps(parse_mask("center", 8), layout)
    assert order.can_edit(layout, keep) is None
    tokens = tok.encode(images)
    with one_thread():
        out = order.edit(model, tok, tokens, keep, torch.tensor([0, 1, 2]), _sampler(), make_generator(0, "cpu"))
    assert [o.shape for o in out] == [t.shape for t in tokens]
    for o, t, k in zip(out, tokens, keep):
        assert torch.equal(o[:, k], t[:, k])
    free = torch.cat([~k for k in keep])
    assert free.any() and not torch.equal(torch.cat(out, 1)[:, free], torch.cat(tokens, 1)[:, free])


def test_next_scale_puts_kept_codes_into_f_hat_before_the_next_scale():
    order, tok, model, images = _setup("next-scale")
    layout = order.layout(tok)
    keep = keep_maps(parse_mask("left", 8), layout)
    tokens = tok.encode(images)
    seen = []
    step = tok.latent_step

    def spy(k, f_hat, codes):
        seen.append(codes.clone())
        return step(k, f_hat, codes)

    tok.latent_step = spy
    rec = CallRecorder(model)
    with one_thread():
        out = order.edit(rec, tok, tokens, keep, torch.tensor([0, 1, 2]), _sampler(top_k=3), make_generator(1, "cpu"))
    for k in range(layout.num_levels):  # the codes that update f_hat: the image's where kept, the output's everywhere
        assert torch.equal(seen[k], tok.code_vectors(out[k]))
        assert torch.equal(seen[k][:, keep[k]], tok.code_vectors(tokens[k])[:, keep[k]])
    # and the next scale's input is the downsampled f_hat of exactly those codes (teacher forcing)
    fed = torch.cat([c[0][:3] for c in rec.calls[1:]], dim=1)  # conditional half of each cached step
    torch.testing.assert_close(fed, tok.latent_inputs(out))


def test_maskgit_never_masks_a_kept_token():
    order, tok, model, images = _setup("maskgit", {"steps": 4})
    layout = order.layout(tok)
    keep = keep_maps(parse_mask("top", 8), layout)
    tokens = tok.encode(images)
    rec = CallRecorder(model)
    with one_thread():
        out = order.edit(rec, tok, tokens, keep, torch.tensor([0, 1, 2]), _sampler(), make_generator(0, "cpu"))
    assert 1 <= len(rec.calls) <= 4
    for fed, _, _ in rec.calls:
        assert torch.equal(fed[:3][:, keep[0]], tokens[0][:, keep[0]])  # kept: the image's token at every step
    assert (out[0] < tok.codebook_size).all()  # nothing left masked


def test_raster_edits_a_prefix_and_cache_matches_recompute():
    order, tok, model, images = _setup("raster")
    layout = order.layout(tok)
    keep = keep_maps(parse_mask("bottom", 8), layout)
    assert keep[0].tolist() == [True] * 8 + [False] * 8 and order.can_edit(layout, keep) is None
    tokens = tok.encode(images)
    lab = torch.tensor([0, 1, 2])
    with one_thread():
        a = order.edit(model, tok, tokens, keep, lab, _sampler(), make_generator(0, "cpu"))
        slow = registry("orders").create("raster", {"kv_cache": False})
        b = slow.edit(model, tok, tokens, keep, lab, _sampler(), make_generator(0, "cpu"))
    assert torch.equal(a[0][:, :8], tokens[0][:, :8])
    assert torch.equal(a[0], b[0])  # the prefilled cache gives what recomputing the prefix gives


@pytest.mark.parametrize("mask", ["center", "top", "left"])
def test_raster_refuses_what_is_not_a_prefix_and_says_why(mask):
    order, tok, _, _ = _setup("raster")
    layout = order.layout(tok)
    reason = order.can_edit(layout, keep_maps(parse_mask(mask, 8), layout))
    assert reason is not None
    assert "raster order" in reason and "prefix" in reason and "out-painting the bottom rows" in reason
    assert "must be generated before the kept token" in reason


def test_an_order_that_declares_nothing_cannot_edit():
    class Plain(Order):  # only the abstract methods, no editing capability
        layout = groups = num_steps = build_stem = training_batch = generate = lambda *a, **k: None

    reason = Order.can_edit(Plain.__new__(Plain), TokenLayout((4,)), [torch.ones(16, dtype=torch.bool)])
    assert reason is not None and "does not declare editing" in reason


# -- the command ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """Three tiny runs (1 training step each) on a generated 16 px shapes set."""
    from test_cli import shapes_npz

    root = tmp_path_factory.mktemp("edit")
    data = shapes_npz(root / "shapes16.npz", 16)
    with one_thread():
        for tok_name in ("msvq-tiny", "vq-tiny"):
            r = invoke("train-tokenizer", "--tokenizer", tok_name, "--set", "tokenizer.channels=3", "--dataset", data,
                       "--steps", "2", "--batch-size", "8", "--out", root / tok_name)  # fmt: skip
            assert r.exit_code == 0, r.output
        for order, tok_name in (("next-scale", "msvq-tiny"), ("raster", "vq-tiny"), ("maskgit", "vq-tiny")):
            r = invoke("train", "--order", order, "--depth", "1", "--dataset", data, "--tokenizer",
                       root / tok_name / "tokenizer", "--steps", "1", "--batch-size", "8", "--out", root / order)  # fmt: skip
            assert r.exit_code == 0, r.output
    return root, data


@pytest.fixture()
def _cli(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # the classifier cache (runs/classifiers) lands here, not in the repository
    monkeypatch.setattr(console, "width", 200)
    monkeypatch.setenv("GENORDER_FID_CACHE", str(tmp_path / "fid"))
    with one_thread():
        yield


def test_edit_command_end_to_end(tiny_runs, tmp_path, _cli, monkeypatch):
    import genorder.editing

    root, data = tiny_runs
    out = tmp_path / "e"
    monkeypatch.setattr(genorder.editing, "FID_MIN_IMAGES", 6)  # 3 images x 2 seeds get a FID here
    r = invoke("edit", "--run", root / "next-scale", "--run", root / "raster", "--run", root / "maskgit",
               "--dataset", data, "--n", "3", "--mask", "center", "--class", "2", "--seeds", "2",
               "--extractor", "genorder-tiny-random", "--cache-dir", tmp_path / "mycache", "--out", out)  # fmt: skip
    assert r.exit_code == 0, r.output
    # --cache-dir holds the FID reference and the classifier; the default cache is not touched
    assert list((tmp_path / "mycache").glob("*-test-*px-genorder-tiny-random-*.npz"))
    assert list((tmp_path / "mycache" / "classifiers").glob("*/classifier.json"))
    assert not (tmp_path / "fid").exists()
    rec = json.loads((out / "edit.json").read_text())
    rows = {row["order"]: row for row in rec["orders"]}
    assert set(rows) == {"next-scale", "raster", "maskgit"}
    assert "prefix" in rows["raster"]["refused"] and "cannot make this edit" in r.output
    for name in ("next-scale", "maskgit"):
        row = rows[name]
        assert row["kept_token_agreement"] == 1.0 and row["kept_token_agreement_min"] == 1.0
        assert row["generated_tokens"] > 0 and np.isfinite(row["fid"]) and row["fid_n"] == 6
        assert np.isfinite(row["outside_psnr_vs_reconstruction"])
        acc = row["class_accuracy"]  # the class-consistency classifier, trained on the npz set's train split
        assert acc["n"] == 6 and 0.0 <= acc["lo"] <= acc["acc"] <= acc["hi"] <= 1.0
    w, h = Image.open(out / "edit.png").size
    assert w > 2 * (2 + 3 * 2) * 16 and h > 3 * 16 * 2  # original | mask | 3 orders x 2 seeds, 3 rows, scale 2


def test_edit_skips_fid_on_few_images_with_a_note(tiny_runs, tmp_path, _cli):
    root, data = tiny_runs
    r = invoke("edit", "--run", root / "raster", "--dataset", data, "--n", "2", "--mask", "bottom", "--seeds", "1",
               "--extractor", "genorder-tiny-random", "--out", tmp_path / "e")  # fmt: skip
    assert r.exit_code == 0, r.output
    rec = json.loads((tmp_path / "e" / "edit.json").read_text())
    assert "FID skipped: 2 edited images, fewer than 100" in rec["fid_note"] and "FID skipped" in r.output
    assert "fid" not in rec["orders"][0] and not (tmp_path / "fid").exists()  # no reference computed


def test_edit_takes_a_class_balanced_subset(tiny_runs, tmp_path, _cli, monkeypatch):
    """--n from --dataset: a seeded class-balanced subset of the test split, not its first n."""
    from genorder_cli import cmd_edit

    from genorder.data import load_dataset
    from genorder.subsets import subset_of

    root, data = tiny_runs
    seen = []
    real = cmd_edit.edit_images
    monkeypatch.setattr(cmd_edit, "edit_images", lambda run, x, *a, **k: seen.append(x.clone()) or real(run, x, *a, **k))
    r = invoke("edit", "--run", root / "raster", "--dataset", data, "--n", "4", "--mask", "bottom", "--seeds", "1",
               "--no-fid", "--out", tmp_path / "e")  # fmt: skip
    assert r.exit_code == 0, r.output
    test = load_dataset(data, "test", image_size=16, channels=3)
    images, labels = subset_of(test, 4)
    assert len(set(labels.tolist())) == 4  # four classes, one image each
    assert torch.equal(seen[0], images.float() / 127.5 - 1)


def test_edit_bottom_lets_raster_out_paint(tiny_runs, tmp_path, _cli):
    root, data = tiny_runs
    r = invoke("edit", "--run", root / "raster", "--dataset", data, "--n", "2", "--mask", "bottom", "--seeds", "1",
               "--no-fid", "--out", tmp_path / "e")  # fmt: skip
    assert r.exit_code == 0, r.output
    row = json.loads((tmp_path / "e" / "edit.json").read_text())["orders"][0]
    assert "refused" not in row and row["kept_token_agreement"] == 1.0 and row["kept_tokens"] == 8


def test_edit_refused_by_every_run_is_an_error_and_writes_nothing(tiny_runs, tmp_path, _cli):
    root, data = tiny_runs
    r = invoke("edit", "--run", root / "raster", "--dataset", data, "--mask", "left", "--no-fid", "--out", tmp_path / "e")
    assert r.exit_code == 2 and "error:" in r.output and "raster order" in r.output
    assert not (tmp_path / "e").exists()
    r = invoke("edit", "--run", root / "maskgit", "--dataset", data, "--mask", "left", "--class", "99", "--out", tmp_path / "e")
    assert r.exit_code == 2 and "--class 99" in r.output and not (tmp_path / "e").exists()


def test_imported_official_run_edits_through_the_same_command(tmp_path, _cli):
    r = invoke("import", "var", "--vae", FIXTURE, "--vae-prefix", "vae.", "--var", FIXTURE, "--var-prefix", "var_a.",
               "--out", tmp_path / "var")  # fmt: skip
    assert r.exit_code == 0, r.output
    img = load_file(str(FIXTURE))["input.img"][0]
    arr = ((img.permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    (tmp_path / "imgs").mkdir()
    Image.fromarray(arr).save(tmp_path / "imgs" / "a.png")
    r = invoke("edit", "--run", tmp_path / "var", "--images", tmp_path / "imgs", "--mask", "0.25,0.25,0.75,0.75",
               "--class", "3", "--seeds", "2", "--no-fid", "--top-k", "5", "--out", tmp_path / "e")  # fmt: skip
    assert r.exit_code == 0, r.output
    row = json.loads((tmp_path / "e" / "edit.json").read_text())["orders"][0]
    assert row["order"] == "next-scale" and row["kept_token_agreement_min"] == 1.0
    keep = keep_maps(parse_mask("0.25,0.25,0.75,0.75", 128), TokenLayout((1, 2, 4, 6, 8)))
    assert row["kept_tokens"] == sum(int(k.sum()) for k in keep) and 0 < row["generated_tokens"] < 121
    assert (tmp_path / "e" / "edit.png").is_file()
