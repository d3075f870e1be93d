"""The orders of the field (issue 23): raster scans, MaskGIT unmasking orders, random-ar, rar, nar, par.

  * every order generates every cell exactly once, at the step it declares: a stand-in model whose
    logits put all mass on the id of the current backbone call stamps each cell with the step that
    generated it, and the stamps are compared with the order's definition (written here again, not
    read from the plugin);
  * the contract checks of `genorder.testing` (cached = uncached included) for each option variant,
    registered for the test under its own name;
  * training statistics (random-ar's permutations, rar's annealed probability and the trainer
    telling it the progress), editing, `genorder plugins` / `genorder check`, `expand_orders`.
"""

from __future__ import annotations

import math

import pytest
import torch
from genorder_plugins.maskgit.schedule import halton_order, tokens_per_step
from genorder_plugins.raster.scans import SCANS, scan_order
from pydantic import model_validator
from typer.testing import CliRunner

from genorder import StandardSampler, UserError
from genorder.generation import make_generator
from genorder.model import build_model
from genorder.registry import Entry, builtin_names, expand_orders, registry
from genorder.testing import (
    TinyCodebookTokenizer,
    one_thread,
    tiny_backbone,
    train_steps,
)
from genorder.testing.contracts import ORDER_CHECKS

NEW_ORDERS = ("random-ar", "rar", "nar", "par")
NUM_CLASSES = 4


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


# -- a model that stamps each generated cell with the backbone call that produced it -------------------
class StepStamp(torch.nn.Module):
    """Stands in for a GenModel: runs it (shapes, cache), then returns logits whose argmax is the
    number of calls made before this one."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model
        self.calls = 0

    @property
    def null_class(self) -> int:
        return self.model.null_class

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("model"), name)

    def new_cache(self, *a, **k):
        return self.model.new_cache(*a, **k)

    def forward(self, inputs, labels, start=0, cache=None):
        out = self.model(inputs, labels, start=start, cache=cache)
        stamp = torch.full_like(out, -1e4)
        stamp[..., self.calls] = 1e4
        self.calls += 1
        return stamp


def stamps(name: str, side: int = 4, vocab: int = 64, **options) -> tuple[torch.Tensor, object, int]:
    """(B, side, side) step at which each cell was generated, the order, and its num_steps."""
    torch.manual_seed(0)
    order = registry("orders").create(name, options)
    tok = TinyCodebookTokenizer((side,), vocab)
    model = build_model(order, tok, tiny_backbone(depth=1), NUM_CLASSES)
    rec = StepStamp(model)
    sampler = StandardSampler(StandardSampler.Config(cfg=0.0, top_k=1))
    out = order.generate(rec, tok, torch.tensor([0, 1, 2]), sampler, make_generator(0, "cpu"))
    T = order.num_steps(order.layout(tok))
    assert rec.calls == T
    return out[0].reshape(-1, side, side), order, T


def _cells_by_step(map_pp: torch.Tensor) -> list[list[tuple[int, int]]]:
    p = map_pp.shape[0]
    T = int(map_pp.max()) + 1
    return [[(r, c) for r in range(p) for c in range(p) if int(map_pp[r, c]) == t] for t in range(T)]


@pytest.mark.parametrize("scan", SCANS)
def test_raster_scan_generates_each_cell_once_in_scan_order(scan):
    st, _, T = stamps("raster", scan=scan)
    assert T == 16
    for m in st:  # step i generates the i-th cell of the scan, once
        assert torch.equal(m.flatten().sort().values, torch.arange(16))
        assert torch.equal(m.flatten()[scan_order(scan, 4)], torch.arange(16))


def test_scans_are_the_declared_curves():
    assert scan_order("row", 3).tolist() == list(range(9))
    assert scan_order("alternate", 3).tolist() == [0, 1, 2, 5, 4, 3, 6, 7, 8]
    assert scan_order("spiral-in", 3).tolist() == [0, 1, 2, 5, 8, 7, 6, 3, 4]
    assert scan_order("spiral-out", 3).tolist() == [4, 3, 6, 7, 8, 5, 2, 1, 0]
    assert scan_order("zcurve", 4).tolist()[:8] == [0, 1, 4, 5, 2, 3, 6, 7]
    assert scan_order("subsample", 4).tolist()[:4] == [0, 2, 8, 10]
    for scan in SCANS:
        for p in (1, 2, 5, 8):
            assert torch.equal(scan_order(scan, p).sort().values, torch.arange(p * p)), (scan, p)
    with pytest.raises(ValueError, match="unknown scan"):
        scan_order("diagonal", 4)


def test_raster_default_is_unchanged():
    """scan = row is not dumped (old run fingerprints hold) and gives plain raster's batch."""
    from genorder_plugins.raster import Raster

    assert Raster.Config().model_dump() == {"kv_cache": True, "multiscale": False}
    assert Raster.Config(scan="zcurve").model_dump()["scan"] == "zcurve"
    tok = TinyCodebookTokenizer((4,), 16)
    t = [torch.randint(0, 16, (2, 16))]
    row = Raster(Raster.Config()).training_batch(t, tok)
    assert torch.equal(row.targets, t[0]) and torch.equal(row.inputs, t[0][:, :-1])
    z = Raster(Raster.Config(scan="zcurve")).training_batch(t, tok)
    assert torch.equal(z.targets, t[0][:, scan_order("zcurve", 4)])


def test_nar_step_d_is_manhattan_distance_d():
    for side in (3, 4, 5):
        st, _, T = stamps("nar", side=side)
        assert T == 2 * side - 1
        dist = torch.tensor([[r + c for c in range(side)] for r in range(side)])
        for m in st:
            assert torch.equal(m, dist)


@pytest.mark.parametrize("side,q", [(4, 2), (6, 3), (4, 1), (4, 4), (8, 2)])
def test_par_first_tokens_of_regions_in_turn_then_offsets_in_parallel(side, q):
    st, _, T = stamps("par", side=side, regions_per_side=q)
    m = side // q
    R, M = q * q, m * m
    assert T == R + M - 1
    for map_pp in st:
        steps = _cells_by_step(map_pp)
        assert len(steps) == T and sum(len(s) for s in steps) == side * side  # each cell once
        for r in range(R):  # step r: the first (top-left) token of region r, alone
            assert steps[r] == [(r // q * m, r % q * m)]
        for o in range(1, M):  # then offset o, row-major inside the region, of every region
            want = sorted((rr // q * m + o // m, rr % q * m + o % m) for rr in range(R))
            assert sorted(steps[R - 1 + o]) == want
    with pytest.raises(UserError, match="does not divide"):
        stamps("par", side=4, regions_per_side=3)


@pytest.mark.parametrize("instruct", ["embedding", "tokens"])
def test_random_ar_generates_each_cell_once_in_a_fresh_order_per_sample(instruct):
    st, _, T = stamps("random-ar", instruct=instruct)
    assert T == 16
    flat = st.reshape(3, 16)
    for m in flat:  # one cell per step: the stamps are a permutation of the steps
        assert torch.equal(m.sort().values, torch.arange(16))
    assert not torch.equal(flat[0], flat[1]) and not torch.equal(flat[1], flat[2])


@pytest.mark.parametrize("scan", ["row", "spiral-in", "zcurve"])
def test_random_ar_and_rar_sample_in_the_given_order(scan):
    for name in ("random-ar", "rar"):
        st, _, _ = stamps(name, sample_order=scan)
        for m in st:
            assert torch.equal(m.flatten()[scan_order(scan, 4)], torch.arange(16)), name
    st, _, _ = stamps("rar")  # rar's default: raster
    assert torch.equal(st[0].flatten(), torch.arange(16))


@pytest.mark.parametrize("unmask", ["confidence", "random", "halton"])
def test_maskgit_unmasking_orders_fix_each_cell_once(unmask):
    T = 5
    st, _, steps = stamps("maskgit", order=unmask, steps=T)
    assert steps == T
    counts = tokens_per_step(16, T)
    for m in st.reshape(3, 16):
        assert torch.bincount(m, minlength=T).tolist() == counts  # each cell fixed once, per schedule
    if unmask == "halton":  # fixed positions, no confidence: the Halton sequence in chunks
        h = halton_order(4, 4)
        ends = [sum(counts[: t + 1]) for t in range(T)]
        for m in st.reshape(3, 16):
            for t in range(T):
                assert (m[h[: ends[t]]] <= t).all()
    if unmask == "random":  # a fresh order per sample
        flat = st.reshape(3, 16)
        assert not (torch.equal(flat[0], flat[1]) and torch.equal(flat[1], flat[2]))


def test_maskgit_random_one_token_per_step_is_mars_row():
    """MAR Tab. 1 'random, bidirectional': unmask_order = random with steps = L."""
    st, order, T = stamps("maskgit", unmask_order="random", steps=16)
    assert T == 16 and order.config.unmask_order == "random"
    for m in st.reshape(3, 16):
        assert torch.equal(m.sort().values, torch.arange(16))
    assert registry("orders").create("maskgit").config.unmask_order == "confidence"  # default unchanged


# -- the contract checks for each option variant ---------------------------------------------------
def _variant(name: str, **defaults):
    """A subclass of the registered order whose Config takes `defaults` unless given."""
    base = registry("orders").get(name)

    class Config(base.Config):
        @model_validator(mode="before")
        @classmethod
        def _defaults(cls, data):
            return {**defaults, **(data or {})}

    return type(f"{base.__name__}Variant", (base,), {"Config": Config, "__doc__": base.__doc__})


VARIANTS = {
    **{f"raster-{s}": ("raster", {"scan": s}) for s in SCANS if s != "row"},
    "maskgit-random": ("maskgit", {"unmask_order": "random"}),
    "maskgit-halton": ("maskgit", {"unmask_order": "halton"}),
    "random-ar-tokens": ("random-ar", {"instruct": "tokens"}),
    "random-ar-zcurve": ("random-ar", {"sample_order": "zcurve"}),
    "rar-tokens": ("rar", {"instruct": "tokens"}),
    "par-q4": ("par", {"regions_per_side": 4}),
}
QUICK = ("build", "generate", "cached = uncached")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_option_variants_keep_the_contracts(variant, monkeypatch):
    name, defaults = VARIANTS[variant]
    reg = registry("orders")
    monkeypatch.setitem(reg.entries, variant, Entry(variant, _variant(name, **defaults), "test"))
    assert registry("orders").create(variant).config.model_dump().items() >= defaults.items()
    checks = ORDER_CHECKS if variant in ("random-ar-tokens", "raster-zcurve") else {k: ORDER_CHECKS[k] for k in QUICK}
    for check, fn in checks.items():
        if check == "cached = uncached" and registry("orders").get(variant).kv_cache_option is None:
            continue
        fn(variant)


def test_new_orders_declare_their_capabilities():
    for name in NEW_ORDERS:
        cls = registry("orders").get(name)
        assert cls.kv_cache_option == "kv_cache" and registry("orders").create(name).uses_kv_cache
        assert cls.tokenizer_kind == "single-scale" and cls.compare_default is False
    assert registry("orders").get("rar").uses_training_progress
    assert not any(registry("orders").get(n).uses_training_progress for n in ("random-ar", "nar", "par", "raster"))


# -- training statistics ---------------------------------------------------------------------------
def test_random_ar_training_permutations_are_uniform():
    """Each row's order is a permutation; the cell at step 0 is uniform over the 16 cells
    (chi-square, 15 dof, 4000 samples: the 0.999 quantile is 37.7)."""
    order = registry("orders").create("random-ar")
    tok = TinyCodebookTokenizer((4,), 16)
    tokens = [torch.arange(16).repeat(4000, 1)]  # token id = cell index
    b = order.training_batch(tokens, tok, torch.Generator().manual_seed(1))
    seq = b.targets  # (B, L): step i holds the token (= the cell) of order[i]
    assert torch.equal(seq.sort(dim=1).values, torch.arange(16).repeat(4000, 1))
    assert torch.equal(b.inputs["tokens"], seq[:, :-1]) and torch.equal(b.inputs["order"], seq)
    counts = torch.bincount(seq[:, 0], minlength=16).float()
    chi2 = float(((counts - 250) ** 2 / 250).sum())
    assert chi2 < 37.7, chi2


def test_random_ar_instruction_tokens_layout():
    order = registry("orders").create("random-ar", {"instruct": "tokens"})
    tok = TinyCodebookTokenizer((4,), 16)
    tokens = [torch.randint(0, 16, (3, 16))]
    b = order.training_batch(tokens, tok, torch.Generator().manual_seed(0))
    assert b.targets.shape == (3, 32) and (b.targets[:, 0::2] == -100).all()
    seq = tokens[0].gather(1, b.inputs["order"])
    assert torch.equal(b.targets[:, 1::2], seq)
    assert torch.equal(order.groups(order.layout(tok)), torch.arange(32) // 2)


def test_rar_anneals_the_random_probability():
    order = registry("orders").create("rar")
    assert [order.random_probability(f) for f in (0.0, 0.5, 0.625, 0.75, 1.0)] == [1.0, 1.0, 0.5, 0.0, 0.0]
    tok = TinyCodebookTokenizer((4,), 16)
    tokens = [torch.arange(16).repeat(2000, 1)]
    g = torch.Generator().manual_seed(0)
    for fraction, lo, hi in ((0.0, 1.0, 1.0), (0.625, 0.45, 0.55), (0.8, 0.0, 0.0)):
        order.set_training_progress(fraction)
        seq = order.training_batch(tokens, tok, g).targets
        raster = (seq == torch.arange(16)).all(dim=1).float()
        permuted = 1 - raster.mean().item()  # a random permutation is raster with prob 1/16!
        # 2000 Bernoulli(0.5) draws: sd 0.011, so [0.45, 0.55] is > 4 sd wide on each side
        assert lo <= permuted <= hi, (fraction, permuted)
    with pytest.raises(UserError, match="anneal_end"):
        registry("orders").create("rar", {"anneal_start": 0.8, "anneal_end": 0.6})


def test_the_trainer_tells_rar_its_progress(tmp_path, monkeypatch):
    from genorder_plugins.rar import RAR

    from genorder.trainer import TrainConfig, Trainer

    seen = []
    monkeypatch.setattr(RAR, "set_training_progress", lambda self, f: seen.append(f))
    torch.manual_seed(0)
    tok = TinyCodebookTokenizer((4,), 16, image_size=8)
    from genorder.testing import tensor_dataset

    ds = tensor_dataset((torch.rand(16, 1, 8, 8) * 255).to(torch.uint8), torch.arange(16) % 4)
    order = registry("orders").create("rar")
    model = build_model(order, tok, tiny_backbone(depth=1), 4)
    cfg = TrainConfig(batch_size=4, budget={"steps": 4}, device="cpu", checkpoint_every=None)
    trainer = Trainer(order, tok, model, ds, cfg, tmp_path, {})
    for step in range(4):
        trainer.train_step(step, fraction=step / 4)
    assert seen == [0.0, 0.25, 0.5, 0.75]


@pytest.mark.parametrize("name", NEW_ORDERS)
def test_a_few_steps_lower_the_loss(name):
    torch.manual_seed(0)
    order = registry("orders").create(name)
    tok = TinyCodebookTokenizer((4,), 16)
    model = build_model(order, tok, tiny_backbone(depth=1), NUM_CLASSES)
    tokens = [torch.randint(0, 16, (8, 16), generator=torch.Generator().manual_seed(3))]
    losses = train_steps(model, order, tok, tokens, torch.arange(8) % 4, steps=40, lr=1e-2)
    assert losses[0] > math.log(16) - 0.5 and sum(losses[-5:]) / 5 < losses[0] - 0.5, losses[::8]


# -- editing -----------------------------------------------------------------------------------------
def _edit(name, keep_L, **options):
    torch.manual_seed(0)
    order = registry("orders").create(name, options)
    tok = TinyCodebookTokenizer((4,), 16)
    layout = order.layout(tok)
    model = build_model(order, tok, tiny_backbone(depth=1), NUM_CLASSES)
    reason = order.can_edit(layout, [keep_L])
    if reason is not None:
        return reason, None, None
    tokens = [torch.randint(0, 16, (2, 16), generator=torch.Generator().manual_seed(5))]
    sampler = StandardSampler(StandardSampler.Config(cfg=1.5, top_k=4))
    out = order.edit(model, tok, tokens, [keep_L], torch.tensor([1, 2]), sampler, make_generator(0, "cpu"))
    return None, tokens[0], out[0]


def test_random_ar_in_paints_any_region():
    g = torch.Generator().manual_seed(2)
    for _ in range(3):
        keep = torch.rand(16, generator=g) < 0.5
        reason, given, out = _edit("random-ar", keep)
        assert reason is None
        assert torch.equal(out[:, keep], given[:, keep]) and out.shape == given.shape
        assert not torch.equal(out[:, ~keep], given[:, ~keep])  # the free cells are sampled


def test_edit_refusals_and_prefix_edits():
    centre = torch.zeros(4, 4, dtype=torch.bool)
    centre[1:3, 1:3] = True
    centre = centre.flatten()
    for name in ("rar", "nar", "par"):
        reason, _, _ = _edit(name, ~centre)  # keep the border, regenerate the centre: not a prefix
        assert reason and "\n" not in reason, name
    top = torch.arange(16) < 6  # the first six cells row-major: a prefix of raster (rar)
    reason, given, out = _edit("rar", top)
    assert reason is None and torch.equal(out[:, top], given[:, top])
    corner = torch.tensor([r + c <= 2 for r in range(4) for c in range(4)])  # NAR's first 3 steps
    reason, given, out = _edit("nar", corner)
    assert reason is None and torch.equal(out[:, corner], given[:, corner])
    spiral_head = torch.zeros(16, dtype=torch.bool)
    spiral_head[scan_order("spiral-in", 4)[:5]] = True
    assert _edit("raster", spiral_head, scan="spiral-in")[0] is None
    assert "spiral-in scan order" in _edit("raster", top, scan="spiral-in")[0]


# -- registry, CLI -------------------------------------------------------------------------------------
def test_expand_orders():
    assert set(NEW_ORDERS) <= set(expand_orders("all"))
    assert expand_orders("all") == registry("orders").names()
    assert expand_orders(None) == builtin_names("orders")
    assert {"next-scale", "raster", "maskgit"} <= set(expand_orders(None))
    assert not set(NEW_ORDERS) & set(expand_orders(None))  # the default job keeps the paper's orders
    assert expand_orders("nar, par,nar") == ["nar", "par"]
    for bad in ("nar,,par", "", "no-such-order"):
        with pytest.raises(UserError):
            expand_orders(bad)


def _cli(*args):
    from genorder_cli.main import app

    return CliRunner().invoke(app, list(args), terminal_width=400)


def test_plugins_lists_the_new_orders_and_options():
    r = _cli("plugins")
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.replace("│", " ").split())  # wrapped descriptions read on
    for name in NEW_ORDERS:
        assert f" {name} " in text, name
    for words in ("scan = row | zcurve | subsample | spiral-in | spiral-out | alternate",
                  "order = confidence | random | halton", "2n - 1 steps", "in-paints any region"):
        assert words in text, words


@pytest.mark.slow
@pytest.mark.parametrize("name", NEW_ORDERS)
def test_genorder_check_passes(name):
    r = _cli("check", name)
    assert r.exit_code == 0, r.output
    assert "6 passed, 0 failed" in r.output
