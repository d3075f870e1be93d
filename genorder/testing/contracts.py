"""The contracts every plugin component must keep, as plain functions that raise AssertionError.

Each check takes the registered name of one component and builds what it needs at a tiny size on
the CPU (stub tokenizers from `genorder.testing.stubs` for orders). `NotApplicable` means the check
does not concern that component (e.g. no KV-cache option to compare against). docs/PLUGINS.md lists
every rule below; keep the two in step.

Orders (`ORDER_CHECKS`):
  * build: `build_model` with the stub tokenizer of its `tokenizer_kind`; `groups` is (S,) int64
    with S >= L; `training_batch` gives (B, S) int64 targets and (S,) levels; the forward gives
    (B, S, V) logits, a finite loss and finite gradients; the optimiser groups hold every
    parameter once; every `Stem.no_decay` name matches a parameter;
  * generate: for CFG off and on, token maps of the layout's shapes with ids in [0, V), exactly
    `num_steps` backbone calls, progress reported up to (T, T) in order, train mode restored, and
    the same seed gives the same tokens;
  * cached = uncached: with its `kv_cache_option` on and off, the same tokens for the same seed;
  * static step: through the bench's fixed-shape step runner (`genorder.bench.StepRunner`), the
    same tokens as the plain model, twice (the second reuses the persistent cache);
  * compiled path: the step runner under `torch.compile` (trace-only "eager" backend, fullgraph)
    gives the same tokens;
  * counted FLOPs: `FlopCounterMode` over a real generation (math attention, CFG on) equals the
    counted FLOPs (`genorder.bench.generation_steps` + `timed_generation_flops`, AdaLN once when
    `uses_kv_cache`) once the masks are accounted: the math kernel computes every query-key pair
    of a call (n x m) while the count charges the visible ones, so the counter minus the masked
    pairs' 4·C·D FLOPs must match within 2% (the stem's per-position layers are charged to every
    position, e.g. a start token that skips the word embedding).
Tokenizers (`TOKENIZER_CHECKS`): consistent shape facts on the meta device, unknown options
rejected with a UserError, and (<= 5M parameters) a deterministic round trip with ids in [0, V)
and images in [-1, 1], also from a prefix of the scales; a `TrainableTokenizer` trains two steps
through the core loop to a finite loss and its checkpoint reloads to the same tokens.
Samplers (`SAMPLER_CHECKS`): tokens (B, N) int64 in [0, V) and filtered logits (B, N, V), seeded
draws repeat, and the unconditional half is accepted when `uses_cfg`.
Datasets (`DATASET_CHECKS`): with no argument, consistent uint8 images and labels, or a one-line
UserError.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from genorder.errors import UserError
from genorder.registry import registry
from genorder.testing.stubs import CallRecorder, masked_ce, one_thread, tensor_dataset, tiny_backbone, tokenizer_for

V, NUM_CLASSES, B = 16, 4, 2
SMALL_TOKENIZER = 5_000_000  # parameters; larger tokenizers get the meta-device checks only
FLOP_TOLERANCE = 0.02


class NotApplicable(Exception):
    """The check does not concern this component."""


# -- orders ------------------------------------------------------------------------------------------
def _order_setup(name: str, depth: int = 2, **options):
    from genorder.model import build_model

    order = registry("orders").create(name, options)
    try:
        tok = tokenizer_for(order, codebook_size=V)
    except ValueError as err:
        raise NotApplicable(str(err)) from None
    torch.manual_seed(0)
    model = build_model(order, tok, tiny_backbone(depth=depth), NUM_CLASSES)
    return order, tok, model


def _sampler(cfg: float = 1.5):
    from genorder.sampler import StandardSampler

    return StandardSampler(StandardSampler.Config(cfg=cfg, top_k=8))


def _generate(order, model, tok, labels, cfg: float = 1.5, seed: int = 0):
    from genorder.generation import make_generator

    return order.generate(model, tok, labels, _sampler(cfg), make_generator(seed, "cpu"))


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def order_build(name: str) -> None:
    from genorder.model import GenModel
    from genorder.order import Order, TrainBatch

    order, tok, model = _order_setup(name)
    assert isinstance(order, Order) and isinstance(model, GenModel)
    layout = order.layout(tok)
    groups = order.groups(layout)
    assert groups.dtype == torch.long and groups.ndim == 1, f"groups must be (S,) int64, got {groups.dtype} {tuple(groups.shape)}"
    assert groups.numel() >= layout.length, f"groups cover {groups.numel()} positions < L = {layout.length}"
    assert model.seq_len == groups.numel()
    g = torch.Generator().manual_seed(0)
    tokens = [torch.randint(0, V, (B, p * p), generator=g) for p in layout.scales]
    batch = order.training_batch(tokens, tok, g)
    assert isinstance(batch, TrainBatch), f"training_batch returned {type(batch).__name__}, not TrainBatch"
    S = groups.numel()
    assert batch.targets.shape == (B, S) and batch.targets.dtype == torch.long, (
        f"targets must be (B, S) = {(B, S)} int64, got {tuple(batch.targets.shape)} {batch.targets.dtype}")
    if batch.levels is not None:
        assert batch.levels.shape == (S,), f"levels must be (S,) = ({S},), got {tuple(batch.levels.shape)}"
    model.train()
    logits = model(batch.inputs, torch.tensor([0, NUM_CLASSES]))
    assert logits.shape == (B, S, V), f"logits {tuple(logits.shape)} != (B, S, V) = {(B, S, V)}"
    loss = masked_ce(logits, batch.targets)
    assert torch.isfinite(loss), f"loss is {float(loss)}"
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(gr).all() for gr in grads), "gradients must exist and be finite"
    pgs = model.param_groups(0.05)
    ids = [id(p) for pg in pgs for p in pg["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters())), "optimiser groups must hold every parameter once"
    names = [n for n, _ in model.stem.named_parameters()]
    for k in model.stem.no_decay:
        assert any(k in n for n in names), f"Stem.no_decay name {k!r} matches no stem parameter ({names})"


def order_generate(name: str) -> None:
    from genorder.generation import make_generator

    for cfg in (0.0, 1.5):
        order, tok, model = _order_setup(name)
        layout = order.layout(tok)
        labels = torch.tensor([1, NUM_CLASSES])  # a class and the null class
        rec = CallRecorder(model)
        rec.train()
        seen: list[tuple[int, int]] = []
        out = order.generate(rec, tok, labels, _sampler(cfg), make_generator(0, "cpu"), lambda d, t: seen.append((d, t)))
        assert rec.training, "generate must restore train mode (use genorder.inference)"
        assert [tuple(m.shape) for m in out] == [(B, p * p) for p in layout.scales], (
            f"cfg {cfg}: token maps {[tuple(m.shape) for m in out]}, layout wants {[(B, p * p) for p in layout.scales]}")
        for m in out:
            assert m.dtype == torch.long and int(m.min()) >= 0 and int(m.max()) < V, "token ids must be int64 in [0, V)"
        steps = order.num_steps(layout)
        assert len(rec.calls) == steps, f"cfg {cfg}: {len(rec.calls)} backbone calls, num_steps says {steps}"
        assert seen and seen[-1] == (steps, steps), f"progress must end at ({steps}, {steps}), got {seen[-1:] or 'none'}"
        assert [d for d, _ in seen] == sorted(d for d, _ in seen), "progress must not go backwards"
        again = order.generate(model, tok, labels, _sampler(cfg), make_generator(0, "cpu"))
        assert _same(out, again), f"cfg {cfg}: the same seed must give the same tokens"


def order_cached_equals_uncached(name: str) -> None:
    cls = registry("orders").get(name)
    option = getattr(cls, "kv_cache_option", None)
    if option is None:
        raise NotApplicable("the order declares no kv_cache_option")
    labels = torch.tensor([1, 3, NUM_CLASSES])
    order_c, tok, model = _order_setup(name, **{option: True})
    order_u = registry("orders").create(name, {option: False})
    assert order_c.uses_kv_cache and not order_u.uses_kv_cache, f"uses_kv_cache must follow the {option!r} option"
    for cfg in (0.0, 1.5):
        assert _same(_generate(order_c, model, tok, labels, cfg), _generate(order_u, model, tok, labels, cfg)), (
            f"cfg {cfg}: {option}=true and {option}=false must give the same tokens for the same seed")


def order_static_step(name: str) -> None:
    from genorder.bench import StepRunner

    order, tok, model = _order_setup(name)
    model.eval()
    labels = torch.tensor([1, 3, NUM_CLASSES])
    ref = _generate(order, model, tok, labels)
    runner = StepRunner(model, static=True)
    for i in range(2):  # the second generation reuses the persistent cache with stale entries in it
        assert _same(ref, _generate(order, runner, tok, labels)), f"static steps changed the tokens (generation {i + 1})"


def order_compiled_path(name: str) -> None:
    from genorder.bench import StepRunner, _dynamo_limits, generation_steps

    order, tok, model = _order_setup(name, depth=1)
    model.eval()
    labels = torch.tensor([2, NUM_CLASSES])
    ref = _generate(order, model, tok, labels)
    fixed = len(set(generation_steps(order, order.layout(tok)))) == 1
    runner = StepRunner(model, static=True, compile=True, compile_backend="eager", compile_plain=fixed)
    with _dynamo_limits():
        out = _generate(order, runner, tok, labels)
    assert _same(ref, out), "the compiled step path changed the tokens"


def order_counted_flops(name: str) -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from genorder.bench import generation_steps, timed_generation_flops

    order, tok, model = _order_setup(name)
    model.eval()
    steps = generation_steps(order, order.layout(tok))
    labels = torch.tensor([1, 2, 3])
    counter = FlopCounterMode(display=False)
    with counter, sdpa_kernel(SDPBackend.MATH):
        _generate(order, model, tok, labels, cfg=1.5)
    once = bool(model.cfg.adaln and order.uses_kv_cache)  # GenModel memoises AdaLN on the cache
    counted = timed_generation_flops(model, steps, True, once) * len(labels)
    masked_pairs = sum(n * m - pairs for n, m, pairs in steps)
    masked = 4 * model.cfg.C * len(model.blocks) * masked_pairs * 2 * len(labels)  # CFG doubles the batch
    measured = counter.get_total_flops() - masked
    assert measured > 0, "the flop counter saw no matmuls"
    rel = abs(measured - counted) / counted
    assert rel <= FLOP_TOLERANCE, (
        f"counted {counted:.4g} FLOPs, FlopCounterMode {counter.get_total_flops():.4g} minus masked pairs "
        f"{masked:.4g} = {measured:.4g} ({100 * rel:.1f}% apart; uses_kv_cache={order.uses_kv_cache})")


ORDER_CHECKS: dict[str, Callable[[str], None]] = {
    "build": order_build,
    "generate": order_generate,
    "cached = uncached": order_cached_equals_uncached,
    "static step": order_static_step,
    "compiled path": order_compiled_path,
    "counted FLOPs": order_counted_flops,
}


# -- tokenizers --------------------------------------------------------------------------------------
def _params_on_meta(name: str) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in registry("tokenizers").create(name).parameters())


def tokenizer_shape_facts(name: str) -> None:
    from genorder.tokenizer import Tokenizer

    with torch.device("meta"):
        tok = registry("tokenizers").create(name)
    assert isinstance(tok, Tokenizer)
    scales = tuple(tok.scales)
    assert scales and all(isinstance(p, int) and p > 0 for p in scales), f"scales must be positive ints, got {scales}"
    assert all(a < b for a, b in zip(scales, scales[1:])), "scales must be strictly increasing"
    assert tok.codebook_size >= 2 and tok.image_size > 0 and tok.channels in (1, 3, 4)
    try:
        registry("tokenizers").create(name, {"no_such_option": 1})
    except UserError:
        pass
    else:
        raise AssertionError("an unknown option must raise UserError (Config with extra='forbid')")


def tokenizer_round_trip(name: str) -> None:
    if _params_on_meta(name) > SMALL_TOKENIZER:
        raise NotApplicable(f"more than {SMALL_TOKENIZER:,} parameters: shape facts only")
    torch.manual_seed(0)
    tok = registry("tokenizers").create(name).eval()
    C, S = tok.channels, tok.image_size
    x = torch.rand(B, C, S, S) * 2 - 1
    with one_thread():
        tokens, again = tok.encode(x), tok.encode(x)
        assert len(tokens) == len(tok.scales), f"{len(tokens)} token maps for {len(tok.scales)} scales"
        for t, a, p in zip(tokens, again, tok.scales):
            assert t.shape == (B, p * p) and t.dtype == torch.int64, f"a map must be (B, p*p) int64, got {tuple(t.shape)} {t.dtype}"
            assert int(t.min()) >= 0 and int(t.max()) < tok.codebook_size, "ids must be in [0, V)"
            assert torch.equal(t, a), "encoding must be deterministic"
        y = tok.decode(tokens)
        assert y.shape == (B, C, S, S) and torch.isfinite(y).all(), f"decode gave {tuple(y.shape)}"
        assert float(y.min()) >= -1 and float(y.max()) <= 1, "decoded images must be in [-1, 1]"
        assert tok.decode(tokens[:1]).shape == (B, C, S, S), "decoding a prefix of the scales must work"


def tokenizer_trains(name: str) -> None:
    from genorder.runs import load_tokenizer
    from genorder.tokenizer import TrainableTokenizer
    from genorder.tokenizer_training import train_tokenizer

    cls = registry("tokenizers").get(name)
    if not issubclass(cls, TrainableTokenizer):
        raise NotApplicable("not a TrainableTokenizer")
    if _params_on_meta(name) > SMALL_TOKENIZER:
        raise NotApplicable(f"more than {SMALL_TOKENIZER:,} parameters")
    torch.manual_seed(0)
    tok = registry("tokenizers").create(name)
    ds = tensor_dataset(
        (torch.rand(8, tok.channels, tok.image_size, tok.image_size) * 255).to(torch.uint8), torch.arange(8) % 2
    )
    cfg = cls.TrainConfig(batch_size=4, budget={"steps": 2}, eval_images=4, eval_prefix_images=2, grid_images=2,
                          device="cpu", checkpoint_every=None)  # fmt: skip
    with tempfile.TemporaryDirectory() as d, one_thread():
        m = train_tokenizer(tok, name, ds, cfg, Path(d))
        assert m["steps"] == 2 and torch.isfinite(torch.tensor(float(m["final_train_loss"]))), f"metrics {m}"
        back, back_name = load_tokenizer(Path(d) / "tokenizer")
        assert back_name == name
        x = ds.get_batch(torch.arange(4))[0]
        tok.eval()
        assert _same(tok.encode(x), back.encode(x)), "the saved checkpoint must reload to the same tokens"
        assert (Path(d) / "reconstructions.png").is_file() and (Path(d) / "metrics.json").is_file()


TOKENIZER_CHECKS: dict[str, Callable[[str], None]] = {
    "shape facts": tokenizer_shape_facts,
    "round trip": tokenizer_round_trip,
    "trains": tokenizer_trains,
}


# -- samplers ----------------------------------------------------------------------------------------
def sampler_draws(name: str) -> None:
    s = registry("samplers").create(name)
    assert isinstance(s.uses_cfg, bool)
    logits = torch.randn(3, 5, V)
    uncond = torch.randn(3, 5, V) if s.uses_cfg else None
    a, filt = s(logits, uncond, 0, 2, torch.Generator().manual_seed(1))
    b, _ = s(logits, uncond, 0, 2, torch.Generator().manual_seed(1))
    assert a.shape == (3, 5) and a.dtype == torch.long and int(a.min()) >= 0 and int(a.max()) < V
    assert filt.shape == (3, 5, V), f"filtered logits {tuple(filt.shape)} != (3, 5, {V})"
    assert torch.equal(a, b), "the same generator seed must give the same draws"


SAMPLER_CHECKS: dict[str, Callable[[str], None]] = {"draws": sampler_draws}


# -- datasets ----------------------------------------------------------------------------------------
def dataset_loads(name: str) -> None:
    from genorder.data import ImageDataset, load_dataset

    try:
        ds = load_dataset(name, "train", limit=8)
    except UserError as err:  # e.g. a path-taking dataset without a path, or data not installed
        assert str(err).strip() and "\n" not in str(err).strip(), "a dataset error must be one line"
        return
    assert isinstance(ds, ImageDataset) and 0 < len(ds) <= 8
    assert ds.images.dtype == torch.uint8 and ds.images.shape[1:] == (ds.channels, ds.image_size, ds.image_size)
    assert ds.labels.shape == (len(ds),) and int(ds.labels.max()) < ds.num_classes == len(ds.class_names)
    x, y = ds.get_batch(torch.arange(len(ds)))
    assert x.dtype == torch.float32 and float(x.min()) >= -1 and float(x.max()) <= 1
    assert torch.equal(y, ds.labels)


DATASET_CHECKS: dict[str, Callable[[str], None]] = {"loads": dataset_loads}

CHECKS: dict[str, dict[str, Callable[[str], None]]] = {
    "orders": ORDER_CHECKS,
    "tokenizers": TOKENIZER_CHECKS,
    "samplers": SAMPLER_CHECKS,
    "datasets": DATASET_CHECKS,
}


# -- selection and running ---------------------------------------------------------------------------
def _plugin_names(entry_plugin: str) -> set[str]:
    """Names a registering plugin answers to: its entry-point name, its module, its distribution."""
    from genorder.registry import plugin_distributions

    names = {entry_plugin}
    for ep_name, module, dist in plugin_distributions():
        if entry_plugin in (ep_name, module):
            names |= {ep_name, module, dist}
    return names


def select(target: str | None = None) -> list[tuple[str, str]]:
    """(kind, name) of the components to check: every registered one (target None), the
    components registered under that name, or every component of the plugin of that entry-point,
    module or distribution name. Raises UserError when nothing matches."""
    out = []
    for kind in CHECKS:
        for name, entry in registry(kind).entries.items():
            if target is None or target == name or target in _plugin_names(entry.plugin):
                out.append((kind, name))
    if target is not None and not out:
        raise UserError(f"no registered component or plugin named {target!r}; see `genorder plugins`")
    return out


@dataclass
class Result:
    kind: str
    component: str
    check: str
    status: str  # "passed", "failed", "n/a"
    message: str = ""


def run_checks(target: str | None = None, progress: Callable[[int, int, str], None] | None = None) -> list[Result]:
    """Run every check of the selected components (see `select`); never raises for a failed check."""
    todo = [(k, n, c, fn) for k, n in select(target) for c, fn in CHECKS[k].items()]
    results = []
    for i, (kind, name, check, fn) in enumerate(todo):
        if progress:
            progress(i, len(todo), f"{name}: {check}")
        try:
            with one_thread():
                fn(name)
            results.append(Result(kind, name, check, "passed"))
        except NotApplicable as err:
            results.append(Result(kind, name, check, "n/a", str(err)))
        except Exception as err:  # noqa: BLE001 - every failure is reported, with its type
            msg = str(err) if isinstance(err, AssertionError) else f"{type(err).__name__}: {err}"
            results.append(Result(kind, name, check, "failed", msg or "assertion failed"))
    if progress:
        progress(len(todo), len(todo), "done")
    return results
