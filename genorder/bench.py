"""`genorder bench`: every generation order timed side by side, on one device, in one process.

What one row measures (order x batch size):
  * latency: the median over `repeats` timed calls (after `warmup` untimed ones) of one whole batch,
    `order.generate` (CFG doubles the batch the backbone sees) plus the tokenizer decode to pixels when
    `include_decode`; synchronised on both sides (CUDA events on a GPU), see `genorder.timing`;
  * decode: the same decode timed on its own, so its share of the latency is known;
  * FLOPs per image, counted: the backbone through `genorder.flops.generation_flops` with the order's
    actual per-step (queries, keys, visible pairs) (`generation_steps`), and the decoder with
    `torch.utils.flop_counter.FlopCounterMode` over a batch-1 decode on fake tensors (no compute);
  * the device floor: per step max(FLOPs / peak matmul FLOP/s, bytes / bandwidth), bytes being the
    weights read once per step plus the KV cache read, with both ceilings measured once per device
    (a big matmul, a big copy) and cached in `~/.cache/genorder/device_ceilings.json`;
  * peak memory (CUDA), the ratio to a baseline order at the same batch size.

Speed levers (all keep the numbers of the plain path for the same seed):
  * always on, in the core: the sampler draws with the exponential race that `torch.multinomial`
    itself uses, without its two `.item()` checks, so step loops never wait for the device
    (`genorder.sampler.categorical`), and `GenModel` computes the AdaLN modulations once per
    generation (memoised on the KV cache);
  * `static_step`: cached steps attend over the whole preallocated KV cache with a position mask and
    write the new keys with `index_copy_` at a position tensor, so every raster step has one shape
    (`StepRunner`);
  * `compile`: `torch.compile` of that per-step body (mode "reduce-overhead", i.e. CUDA graphs, on a
    GPU), off by default.

Presets (`resolution`): "256" is the paper's layout (3x256 px images: the tokenizers declared for that
shape, VAR's 256 px VQVAE, 16x16 tokens, 10 scales for multi-scale orders, V 4096, 1000 classes,
random weights); "tiny" is for CPU tests (3x16 px, the tiny tokenizers declared for it). Which
tokenizer serves an order comes from the presets' `default_for` declarations and the order's
`tokenizer_kind`; whether it samples with a KV cache from `Order.uses_kv_cache`, and `--kv-cache`
sets the option an order declares in `Order.kv_cache_option`. No order or tokenizer is named here.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from genorder.attention import AttnSpec, KVCache
from genorder.config import ComponentConfig
from genorder.errors import UserError
from genorder.flops import generation_flops, train_flops_per_sample
from genorder.generation import make_generator
from genorder.layout import TokenLayout
from genorder.model import BackboneConfig, GenModel, Modulations, build_model, count_params
from genorder.order import IGNORE, Order
from genorder.registry import PluginFailure, registry
from genorder.sampler import StandardSampler
from genorder.trainer import resolve_device
from genorder.timing import Timing, device_name, peak_memory, reset_peak_memory, time_fn
from genorder.tokenizer import Tokenizer

BenchProgress = Callable[[int, int, str], None]  # (rows done, rows total, what is running)

PRESETS: dict[str, dict[str, Any]] = {
    "256": {"channels": 3, "image_size": 256, "num_classes": 1000},
    "tiny": {"channels": 3, "image_size": 16, "num_classes": 10},
}


def default_orders() -> list[str]:
    """Every registered order, those declaring `reference_baseline` first."""
    reg = registry("orders")
    return sorted(reg.names(), key=lambda n: (not getattr(reg.get(n), "reference_baseline", False), n))


# ------------------------------------------------------------------------------------------------
# configuration
# ------------------------------------------------------------------------------------------------
class BenchConfig(ComponentConfig):
    orders: list[str] = Field(
        default_factory=default_orders, min_length=1,
        description="order specs: NAME or NAME:key=value[:key=value]; default every registered order",
    )
    depth: int = Field(16, ge=1, le=64, description="backbone depth d (width 64·d, d heads)")
    batch_sizes: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [1, 16, 64], min_length=1)
    resolution: Literal["256", "tiny"] = Field("256", description="256: the paper's layout; tiny: CPU tests")
    run: str | None = Field(None, description="a run directory (or a folder of runs): time trained checkpoints")
    cfg: bool = Field(True, description="classifier-free guidance on (the backbone sees a doubled batch)")
    cfg_scale: float = Field(1.5, ge=0.0)
    top_k: int = Field(900, ge=0)
    top_p: float = Field(0.95, ge=0.0, le=1.0)
    include_decode: bool = Field(True, description="latency includes the tokenizer decode to pixels")
    kv_cache: bool = Field(True, description="orders declaring a KV-cache option sample with the static KV cache")
    dtype: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 on CUDA, fp32 elsewhere")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1")
    warmup: int = Field(2, ge=0)
    repeats: int = Field(5, ge=1)
    baseline: str | None = Field(
        "auto", description="order label the ratios are taken against; auto: the order declaring reference_baseline, "
        "else the first; None: no ratios",
    )
    static_step: bool | None = Field(None, description="fixed-shape cached steps; default: on when compiling")
    compile: bool = Field(False, description="torch.compile the per-step backbone call")
    compile_mode: str | None = Field(None, description="torch.compile mode; default reduce-overhead on CUDA")
    compile_backend: str = Field("inductor", description="torch.compile backend (eager: trace only, for tests)")
    floor: bool = Field(True, description="measure (once per device) and report the device floor")
    threads: int | None = Field(None, ge=1, description="CPU threads while benchmarking (default: torch's)")
    num_classes: int | None = Field(None, ge=1, description="default 1000 at 256, 10 at tiny")
    seed: int = Field(0, ge=0, le=2**40)

    @property
    def use_static(self) -> bool:
        return self.compile if self.static_step is None else self.static_step


@dataclasses.dataclass
class OrderSpec:
    label: str
    name: str
    options: dict[str, Any]


def parse_order_spec(spec: str) -> OrderSpec:
    """"NAME:key=false:other=true" -> OrderSpec("NAME:...", "NAME", {...}); values are
    TOML scalars (true, 8, 0.5, "text") or bare words."""
    import tomllib

    parts = [p.strip() for p in spec.strip().split(":")]
    name, opts = parts[0], {}
    if not name:
        raise UserError(f"empty order name in {spec!r}")
    registry("orders").get(name)  # clear error for an unknown order
    for item in parts[1:]:
        if "=" not in item:
            raise UserError(f"order option {item!r} in {spec!r} is not key=value")
        key, raw = (s.strip() for s in item.split("=", 1))
        try:
            opts[key] = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            opts[key] = raw
    return OrderSpec(spec.strip(), name, opts)


# ------------------------------------------------------------------------------------------------
# what the backbone computes per step, and what that costs
# ------------------------------------------------------------------------------------------------
def generation_steps(order: Order, layout: TokenLayout) -> list[tuple[int, int, int]]:
    """Each backbone call of `order.generate` as (queries n, keys m, visible query-key pairs).

    Derived from the order's attention groups and whether it samples with a KV cache:
      * one group (bidirectional, MaskGIT): T full forwards over all S positions, [(S, S, S·S)] x T;
      * groups in sequence with a cache: one group per step, its n positions see every key so far,
        [(n_g, end_g, n_g·end_g)] (next-scale: (p_k², end_k); raster: (1, i+1));
      * without a cache: step g recomputes the whole prefix [0, end_g) under the pattern,
        [(end_g, end_g, Σ_{h<=g} n_h·end_h)] (raster: (i+1, i+1, (i+1)(i+2)/2)).
    Raises ValueError when the count disagrees with `order.num_steps(layout)`."""
    groups = order.groups(layout).cpu()
    S, T = int(groups.numel()), order.num_steps(layout)
    if bool((groups == groups[0]).all()):
        return [(S, S, S * S)] * T
    if bool((groups[1:] < groups[:-1]).any()):
        raise ValueError(f"{type(order).__name__}: attention groups are not in generation order")
    _, counts = torch.unique_consecutive(groups, return_counts=True)
    steps, end, pairs = [], 0, 0
    cached = order.uses_kv_cache
    for n in counts.tolist():
        end += n
        pairs += n * end
        steps.append((n, end, n * end) if cached else (end, end, pairs))
    if len(steps) != T:
        raise ValueError(f"{type(order).__name__}: {len(steps)} attention groups but {T} sampling steps")
    return steps


def linear_weight_bytes(model: torch.nn.Module, bytes_per_element: int, adaln: bool = True) -> int:
    """Bytes of every Linear (weight and bias) in the backbone: what one step must read at least once
    (without the AdaLN linears when `adaln` is False)."""
    n = sum(p.numel() for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)
            and (adaln or not _is_adaln(name)) for p in m.parameters())
    return n * bytes_per_element


def _is_adaln(module_name: str) -> bool:
    return any(k in module_name.split(".") for k in ("ada_lin", "shared_ada_lin"))


def adaln_flops(model: torch.nn.Module) -> float:
    """FLOPs of the AdaLN linears for one sample and one step (they act on the condition only)."""
    return float(sum(2 * m.in_features * m.out_features for name, m in model.named_modules()
                     if isinstance(m, torch.nn.Linear) and _is_adaln(name)))


def timed_generation_flops(model: GenModel, steps: list[tuple[int, int, int]], cfg: bool, adaln_once: bool) -> float:
    """`generation_flops`, minus the AdaLN matmuls of steps 2..T when they are computed once."""
    saved = (len(steps) - 1) * adaln_flops(model) * (2 if cfg else 1) if adaln_once else 0.0
    return generation_flops(model, steps, cfg) - saved


_DECODE_FLOPS: dict[str, float] = {}


def _count_decode_flops(tokenizer: Tokenizer) -> float:
    """FLOPs of one batch-1 decode, counted on fake tensors (no arithmetic is done); a real batch-1
    decode is counted instead when the tokenizer does not run on fake tensors."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.nn.utils.stateless import _reparametrize_module
    from torch.utils.flop_counter import FlopCounterMode

    dev = next(iter(tokenizer.parameters()), torch.empty(0)).device
    scales = tokenizer.scales
    try:
        with FakeTensorMode(allow_non_fake_inputs=True) as fm:
            state = {k: fm.from_tensor(v) for k, v in [*tokenizer.named_parameters(), *tokenizer.named_buffers()]}
            tokens = [torch.zeros(1, p * p, dtype=torch.long, device=dev) for p in scales]
            counter = FlopCounterMode(display=False)
            with _reparametrize_module(tokenizer, state), counter, torch.no_grad():
                tokenizer.decode(tokens)
        return float(counter.get_total_flops())
    except Exception:  # noqa: BLE001 - any tokenizer that cannot run on fake tensors: count a real decode
        counter = FlopCounterMode(display=False)
        with counter, torch.inference_mode():
            tokenizer.decode([torch.zeros(1, p * p, dtype=torch.long, device=dev) for p in scales])
        return float(counter.get_total_flops())


def decoder_flops(tokenizer: Tokenizer) -> float:
    """FLOPs per image of `tokenizer.decode` (cached per tokenizer class and config)."""
    key = f"{type(tokenizer).__module__}.{type(tokenizer).__qualname__}:{tokenizer.config.model_dump_json()}"
    if key not in _DECODE_FLOPS:
        _DECODE_FLOPS[key] = _count_decode_flops(tokenizer)
    return _DECODE_FLOPS[key]


# ------------------------------------------------------------------------------------------------
# device ceilings (measured once per device, cached on disk)
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class DeviceCeilings:
    device: str
    dtype: str
    matmul_flops: float  # FLOP/s of a big dense matmul in `dtype`
    bandwidth: float  # bytes/s of a big device-to-device copy (read + write)
    measured: str  # date

    def floor_s(self, flops: float, bytes_: float) -> float:
        return max(flops / self.matmul_flops, bytes_ / self.bandwidth)


def cache_dir() -> Path:
    return Path(os.environ.get("GENORDER_CACHE_DIR") or Path.home() / ".cache" / "genorder")


def measure_ceilings(device: torch.device, dtype: torch.dtype) -> DeviceCeilings:
    """Peak matmul FLOP/s (random operands, three input sets rotated) and copy bandwidth."""
    cuda = device.type == "cuda"
    n = 8192 if cuda else 1024
    g = torch.Generator(device=device).manual_seed(0)
    ab = [(torch.randn(n, n, device=device, generator=g).to(dtype), torch.randn(n, n, device=device, generator=g).to(dtype))
          for _ in range(3)]
    i = [0]

    def mm():
        a, b = ab[i[0] % 3]
        i[0] += 1
        return a @ b

    t_mm = time_fn(mm, device, warmup=3, repeats=10 if cuda else 5)
    ab.clear()  # the operands are not needed any more (frees them before the copy test)
    numel = 1 << 29 if cuda else 1 << 24  # fp16 elements: 1 GiB (CUDA), 32 MiB (CPU), beyond any cache
    src = torch.randn(numel, device=device, generator=g).to(torch.float16)
    dst = torch.empty_like(src)
    t_cp = time_fn(lambda: dst.copy_(src), device, warmup=3, repeats=10 if cuda else 5)
    bw = 2 * src.numel() * src.element_size() / t_cp.median_s
    return DeviceCeilings(device_name(device), str(dtype).removeprefix("torch."), 2 * n**3 / t_mm.median_s, bw,
                          datetime.date.today().isoformat())


def device_ceilings(device: torch.device, dtype: torch.dtype, remeasure: bool = False) -> DeviceCeilings:
    """The ceilings of this device and dtype, from the JSON cache or measured now (and cached)."""
    path = cache_dir() / "device_ceilings.json"
    key = f"{device_name(device)} | {str(dtype).removeprefix('torch.')}"
    cache: dict[str, Any] = {}
    if path.is_file():
        try:
            cache = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            cache = {}
    if key in cache and not remeasure:
        try:
            return DeviceCeilings(**cache[key])
        except TypeError:
            pass
    c = measure_ceilings(device, dtype)
    cache[key] = dataclasses.asdict(c)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(cache, indent=2))
        tmp.replace(path)
    except OSError:
        pass  # a read-only home: measure again next time
    return c


def floor_seconds(
    model: GenModel,
    steps: list[tuple[int, int, int]],
    batch: int,
    cfg: bool,
    ceilings: DeviceCeilings,
    bytes_per_element: int,
    cached: bool,
    decode_flops: float = 0.0,
    decode_bytes: float = 0.0,
    adaln_once: bool = False,
) -> float:
    """Lower bound on one batch's latency: per sequential step max(FLOPs / peak, bytes / bandwidth),
    bytes = the Linear weights read once + (with a cache) the keys and values read; activations
    are not counted, so the bytes term is itself a lower bound. Plus the decode the same way.
    `adaln_once`: the AdaLN linears run at the first step only (`StepRunner`)."""
    B2 = batch * (2 if cfg else 1)
    D, C = len(model.blocks), model.cfg.C
    total = 0.0
    for i, st in enumerate(steps):
        skip_ada = adaln_once and i > 0
        flops = generation_flops(model, [st], cfg) - (adaln_flops(model) * (2 if cfg else 1) if skip_ada else 0.0)
        w_bytes = linear_weight_bytes(model, bytes_per_element, adaln=not skip_ada)
        kv = 2 * D * B2 * st[1] * C * bytes_per_element if cached else 0
        total += ceilings.floor_s(flops * batch, w_bytes + kv)
    if decode_flops:
        total += ceilings.floor_s(decode_flops * batch, decode_bytes)
    return total


# ------------------------------------------------------------------------------------------------
# speed levers
# ------------------------------------------------------------------------------------------------
class _StaticCacheView:
    """What attention layers see during a static step: writes at the position tensor, reads the
    whole preallocated buffer (the step's (1, max_len) mask hides positions not yet written)."""

    def __init__(self, k_all: torch.Tensor, v_all: torch.Tensor, pos_n: torch.Tensor) -> None:
        self.k, self.v, self.pos = k_all, v_all, pos_n

    def write_and_read(self, layer: int, start: int, k: torch.Tensor, v: torch.Tensor):
        k_l, v_l = self.k[layer], self.v[layer]  # (B, H, max_len, hd)
        k_l.index_copy_(2, self.pos, k.to(k_l.dtype))
        v_l.index_copy_(2, self.pos, v.to(v_l.dtype))
        return k_l, v_l


def _static_step(model: GenModel, x_BnC, mods: Modulations, mask_1K, pos_n, k_all, v_all):
    return model.backbone(x_BnC, mods, AttnSpec("mask", mask_1K), _StaticCacheView(k_all, v_all, pos_n))


def _plain_step(model: GenModel, x_BnC, mods: Modulations, mode: str):
    return model.backbone(x_BnC, mods, AttnSpec(mode), None)


@contextmanager
def _dynamo_limits(limit: int = 256) -> Iterator[None]:
    """Allow one compiled graph per step shape and batch size (next-scale has 10 shapes)."""
    import torch._dynamo

    cfg = torch._dynamo.config
    name = "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit"
    old = getattr(cfg, name)
    setattr(cfg, name, max(old, limit))
    try:
        yield
    finally:
        setattr(cfg, name, old)


class StepRunner:
    """Stands in for a `GenModel` inside `order.generate`: same call, same numbers, faster steps.

    Every call runs condition -> stem -> attention plan eagerly (cheap, shape-dependent Python), then
    the model's own `backbone` (blocks + head) through one of these paths:
      * a cached step whose queries see every cached key (next-scale, raster) takes the static path
        when `static`: the persistent KV cache is read whole under a (1, max_len) position mask and
        written with `index_copy_` at a position tensor, so the step's shapes do not depend on where
        it is in the sequence (raster: one shape for all 256 steps);
      * an uncached step with a fixed shape (MaskGIT) takes the plain path;
      * anything else runs exactly `GenModel.forward`.
    AdaLN modulations are memoised on the cache as in `GenModel.forward`. With `compile`, the static
    and plain paths are `torch.compile`d (mode "reduce-overhead" = CUDA graphs on a GPU; the caches
    are marked static addresses so the graphs can write them)."""

    def __init__(
        self,
        model: GenModel,
        *,
        static: bool = True,
        compile: bool = False,
        compile_mode: str | None = None,
        compile_backend: str = "inductor",
        compile_plain: bool = True,
    ) -> None:
        self.model = model
        self.static = static
        self.compiled = compile
        self._caches: dict[tuple, KVCache] = {}
        static_fn = lambda *a: _static_step(model, *a)  # noqa: E731
        plain_fn = lambda *a: _plain_step(model, *a)  # noqa: E731
        self._mark_step = False
        if compile:
            dev = next(model.parameters()).device
            mode = compile_mode if compile_mode is not None else ("reduce-overhead" if dev.type == "cuda" else None)
            # modes that capture CUDA graphs: tell cudagraph trees where each step begins
            self._mark_step = compile_backend == "inductor" and mode in ("reduce-overhead", "max-autotune")
            kw: dict[str, Any] = {"backend": compile_backend, "fullgraph": True}
            if mode is not None and compile_backend == "inductor":
                kw["mode"] = mode
            self._static_fn = torch.compile(static_fn, **kw)
            self._plain_fn = torch.compile(plain_fn, **kw) if compile_plain else plain_fn
        else:
            self._static_fn, self._plain_fn = static_fn, plain_fn

    # -- what orders and `genorder.generation.inference` use of a GenModel ----------------------
    def __getattr__(self, name: str) -> Any:
        if name == "model":  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.model, name)

    @property
    def training(self) -> bool:
        return self.model.training

    def eval(self) -> StepRunner:
        self.model.eval()
        return self

    def train(self, mode: bool = True) -> StepRunner:
        self.model.train(mode)
        return self

    def new_cache(self, batch: int, max_len: int | None = None, dtype: torch.dtype | None = None) -> KVCache:
        """A persistent cache per shape (CUDA graphs need fixed addresses), reset per generation."""
        if not self.static:
            return self.model.new_cache(batch, max_len, dtype)
        m = self.model
        p = next(m.parameters())
        key = (batch, max_len or m.seq_len, dtype or p.dtype, p.device)
        if key not in self._caches:
            c = m.new_cache(batch, max_len, dtype)
            if self.compiled:
                import torch._dynamo

                torch._dynamo.mark_static_address(c.k)
                torch._dynamo.mark_static_address(c.v)
            self._caches[key] = c
        cache = self._caches[key]
        cache.mods = None  # a new generation, new labels
        return cache

    def __call__(self, inputs: Any, labels: torch.Tensor, start: int = 0, cache=None) -> torch.Tensor:
        m = self.model
        cond_BC = m.condition(labels)
        x_BnC = m.stem(inputs, cond_BC, start)
        n, dev = x_BnC.shape[1], x_BnC.device
        spec = m._plan(start, n, cache is not None, dev)
        if cache is None:
            mods = m.modulations(cond_BC)
        else:
            if cache.mods is None:
                cache.mods = m.modulations(cond_BC)
            mods = cache.mods
        if self._mark_step:
            torch.compiler.cudagraph_mark_step_begin()
        if self.static and cache is not None and spec.mode == "none":
            pos_n = torch.arange(start, start + n, device=dev)  # (n,) write positions
            mask_1K = (cache.key_index < start + n)[None]  # (1, max_len) keys written so far
            return self._static_fn(x_BnC, mods, mask_1K, pos_n, cache.k, cache.v)
        if cache is None and spec.mode == "none":
            return self._plain_fn(x_BnC, mods, spec.mode)
        return m.backbone(x_BnC, mods, spec, cache)


# ------------------------------------------------------------------------------------------------
# building what is timed
# ------------------------------------------------------------------------------------------------


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16}[name]


def make_sampler(config: BenchConfig) -> StandardSampler:
    return StandardSampler(StandardSampler.Config(cfg=config.cfg_scale if config.cfg else 0.0, top_k=config.top_k, top_p=config.top_p))


@dataclasses.dataclass
class Subject:
    """One thing to time: an order with its tokenizer and backbone, on the bench device."""

    label: str
    order_name: str
    order: Order
    tokenizer: Tokenizer
    model: GenModel


def _tokenizer_for(order: Order, resolution: str, device: torch.device, cache: dict) -> Tokenizer:
    from genorder.tokenizer_training import configure_for_dataset

    preset = PRESETS[resolution]
    name, opts = configure_for_dataset(None, order.tokenizer_kind, preset["channels"], preset["image_size"])
    key = (name, json.dumps(opts, sort_keys=True))
    if key not in cache:
        with torch.device(device):
            cache[key] = registry("tokenizers").create(name, opts).eval()
    return cache[key]


def _with_kv_option(spec: OrderSpec, config: BenchConfig) -> dict[str, Any]:
    """The spec's options, with `--kv-cache/--no-kv-cache` set on the option the order declares
    (`Order.kv_cache_option`) unless the spec sets it itself."""
    opts = dict(spec.options)
    option = getattr(registry("orders").get(spec.name), "kv_cache_option", None)
    if option is not None:
        opts.setdefault(option, config.kv_cache)
    return opts


def build_subjects(config: BenchConfig, device: torch.device) -> Iterator[Subject]:
    """Order specs (random weights at the preset size) or trained runs, built one at a time."""
    if config.run:
        from genorder.runs import list_runs, load_run, run_label

        paths = list_runs(config.run)
        if not paths:
            raise UserError(f"no runs under {config.run} (expected model.json in it or in its sub-folders)")
        for p in paths:
            run = load_run(p, device)
            order = run.order
            option = order.kv_cache_option
            if option is not None and getattr(order.config, option) != config.kv_cache:
                opts = {**order.config.model_dump(), option: config.kv_cache}
                order = registry("orders").create(run.order_name, opts)
            yield Subject(f"{run_label(p, config.run)} ({run.order_name})", run.order_name, order, run.tokenizer, run.model.eval())
            del run, order
        return
    toks: dict = {}
    num_classes = config.num_classes or PRESETS[config.resolution]["num_classes"]
    for spec in (parse_order_spec(s) for s in config.orders):
        try:
            order = registry("orders").create(spec.name, _with_kv_option(spec, config))
            tok = _tokenizer_for(order, config.resolution, device, toks)
            bb = BackboneConfig(depth=config.depth)
            with registry("orders").blame(spec.name, "building its model"), torch.device(device):
                model = build_model(order, tok, bb, num_classes).eval()
        except PluginFailure as err:  # this order fails alone; the others are still timed
            yield FailedSubject(spec.label, spec.name, str(err))
            continue
        yield Subject(spec.label, spec.name, order, tok, model)


@dataclasses.dataclass
class FailedSubject:
    """An order whose own code raised before it could be timed (`error` names it and its plugin)."""

    label: str
    order_name: str
    error: str

    def rows(self, config: BenchConfig, device: torch.device, dtype: torch.dtype) -> list[BenchRow]:
        return [BenchRow(order=self.label, order_name=self.order_name, depth=config.depth, params=0, steps=0, batch=B,
                         device=device_name(device), dtype=str(dtype).removeprefix("torch."), cfg=config.cfg,
                         kv_cache=None, compiled=config.compile, static_step=config.use_static, adaln_once=False,
                         include_decode=config.include_decode, error=self.error, failed=True)
                for B in config.batch_sizes]  # fmt: skip


def cast_for_inference(subject: Subject, dtype: torch.dtype) -> None:
    """bf16: backbone weights and the tokenizer's declared `low_precision_modules` (the VQVAE: its
    decoder) in bf16, run under autocast for mixed inputs; the rest (quantizer, codebook) stays fp32,
    as in VAR."""
    if dtype == torch.float32:
        return
    subject.model.to(dtype)
    tok = subject.tokenizer
    for name in getattr(tok, "low_precision_modules", ()):  # declared by the tokenizer
        mod = getattr(tok, name, None)
        if isinstance(mod, torch.nn.Module):
            mod.to(dtype)


def autocast_for(device: torch.device, dtype: torch.dtype):
    if dtype == torch.float32:
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype)


# ------------------------------------------------------------------------------------------------
# rows
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class BenchRow:
    order: str  # label (the spec as given, or the run name)
    order_name: str
    depth: int
    params: int  # backbone parameters
    steps: int  # sequential backbone calls per batch
    batch: int
    device: str
    dtype: str
    cfg: bool
    kv_cache: bool | None
    compiled: bool
    static_step: bool
    adaln_once: bool  # AdaLN modulations computed at the first step only
    include_decode: bool
    latency_s: float | None = None  # median per batch (what `include_decode` says)
    latency_all_s: list[float] = dataclasses.field(default_factory=list)
    images_per_s: float | None = None
    ms_per_image: float | None = None
    decode_s: float | None = None  # median of the decode alone
    decode_share: float | None = None  # decode_s / latency_s when the decode is included
    ms_per_step: float | None = None  # (latency - decode) / steps
    transformer_gflops_per_image: float = 0.0  # counted for the timed path, CFG included
    decode_gflops_per_image: float = 0.0  # counted
    gflops_per_image: float = 0.0  # what the latency covers
    peak_memory_bytes: int | None = None
    floor_s: float | None = None
    floor_fraction: float | None = None  # floor_s / latency_s (1 = at the physical limit)
    ratio_to_baseline: float | None = None  # baseline latency / this latency at the same batch
    error: str | None = None
    failed: bool = False  # the order's own code raised (`error` names it and its plugin); not OOM

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _time_subject(subject: Subject, config: BenchConfig, device: torch.device, dtype: torch.dtype,
                  ceilings: DeviceCeilings | None, progress: Callable[[int, str], None]) -> list[BenchRow]:
    order, tok, model = subject.order, subject.tokenizer, subject.model
    with registry("orders").blame(subject.order_name, "laying out its steps"):
        layout = order.layout(tok)
        steps = generation_steps(order, layout)
    cfg_on = config.cfg and config.cfg_scale > 0
    static = config.use_static
    runner = static or config.compile
    # GenModel memoises the AdaLN modulations on the KV cache: once per generation when cached
    adaln_once = bool(model.cfg.adaln and order.uses_kv_cache)
    t_flops = timed_generation_flops(model, steps, cfg_on, adaln_once)  # what the timed path computes
    d_flops = decoder_flops(tok)
    params = count_params(model)
    cast_for_inference(subject, dtype)
    kv = order.uses_kv_cache if order.kv_cache_option is not None else None
    fixed_shape = len(set(steps)) == 1
    gen_model: Any = model
    if runner:
        gen_model = StepRunner(model, static=static, compile=config.compile, compile_mode=config.compile_mode,
                               compile_backend=config.compile_backend, compile_plain=fixed_shape)
    sampler = make_sampler(config)
    bpe = torch.finfo(dtype).bits // 8
    dec_bytes = sum(p.numel() * p.element_size() for p in tok.parameters())
    rows = []
    for B in config.batch_sizes:
        progress(B, f"{subject.label} batch {B}")
        row = BenchRow(
            order=subject.label, order_name=subject.order_name, depth=len(model.blocks), params=params,
            steps=len(steps), batch=B, device=device_name(device), dtype=str(dtype).removeprefix("torch."),
            cfg=cfg_on, kv_cache=kv, compiled=config.compile, static_step=static,
            adaln_once=adaln_once, include_decode=config.include_decode,
            transformer_gflops_per_image=t_flops / 1e9, decode_gflops_per_image=d_flops / 1e9,
            gflops_per_image=(t_flops + (d_flops if config.include_decode else 0.0)) / 1e9,
        )
        g = torch.Generator().manual_seed(config.seed + B)
        labels = torch.randint(0, model.num_classes, (B,), generator=g).to(device)
        out: dict[str, Any] = {}

        def tokens():
            gen = make_generator(config.seed, device)
            out["tokens"] = order.generate(gen_model, tok, labels, sampler, gen)
            return out["tokens"]

        def full():
            toks = tokens()
            if config.include_decode:
                with torch.inference_mode():
                    tok.decode(toks)

        def decode():
            with torch.inference_mode():
                tok.decode(out["tokens"])

        try:
            with autocast_for(device, dtype):
                reset_peak_memory(device)
                t: Timing = time_fn(full, device, config.warmup, config.repeats)
                row.peak_memory_bytes = peak_memory(device)
                if "tokens" not in out:
                    tokens()
                td = time_fn(decode, device, min(config.warmup, 1), config.repeats)
        except torch.OutOfMemoryError:
            row.error = "out of memory"
            out.clear()
            if device.type == "cuda":
                torch.cuda.empty_cache()
            rows.append(row)
            continue
        except Exception as err:  # the order's own code raised: this row fails, the others go on
            if isinstance(err, UserError) and not isinstance(err, PluginFailure):
                raise
            failure = err if isinstance(err, PluginFailure) else PluginFailure(
                "orders", subject.order_name, registry("orders").plugin_of(subject.order_name), "generating (generate())", err)
            row.error, row.failed = str(failure), True
            out.clear()
            rows.append(row)
            continue
        row.latency_s, row.latency_all_s = t.median_s, list(t.all_s)
        row.images_per_s = B / t.median_s
        row.ms_per_image = 1e3 * t.median_s / B
        row.decode_s = td.median_s
        tok_s = t.median_s - (td.median_s if config.include_decode else 0.0)
        row.decode_share = td.median_s / t.median_s if config.include_decode else None
        row.ms_per_step = 1e3 * max(tok_s, 0.0) / len(steps)
        if ceilings is not None:
            row.floor_s = floor_seconds(  # the necessary work: AdaLN once, whatever the timed path does
                model, steps, B, cfg_on, ceilings, bpe, bool(kv) and not fixed_shape,
                d_flops if config.include_decode else 0.0, dec_bytes if config.include_decode else 0.0,
                adaln_once=model.cfg.adaln,
            )
            row.floor_fraction = row.floor_s / t.median_s
        rows.append(row)
        out.clear()
    return rows


def failures(rows: list[BenchRow]) -> list[str]:
    """One line per order whose own code raised (rows marked `failed`), in row order."""
    return list(dict.fromkeys(r.error for r in rows if r.failed and r.error))


def default_baseline(rows: list[BenchRow]) -> str | None:
    """The first row whose order declares `reference_baseline`, else the first row (its label)."""
    for r in rows:
        if r.order_name in registry("orders").entries and getattr(registry("orders").get(r.order_name), "reference_baseline", False):
            return r.order
    return rows[0].order if rows else None


def add_ratios(rows: list[BenchRow], baseline: str | None) -> None:
    """ratio_to_baseline = baseline latency / row latency at the same batch size (> 1: faster);
    baseline "auto": `default_baseline(rows)`; None: no ratios."""
    if not rows or not baseline:
        return
    if baseline == "auto":
        baseline = default_baseline(rows)
    labels = {r.order for r in rows}
    label = baseline if baseline in labels else next((r.order for r in rows if r.order_name == baseline), None)
    if label is None:
        return
    base = {r.batch: r.latency_s for r in rows if r.order == label and r.latency_s}
    for r in rows:
        if r.latency_s and r.batch in base:
            r.ratio_to_baseline = base[r.batch] / r.latency_s


def validate(config: BenchConfig) -> None:
    """Every user error, raised before anything is built or written."""
    resolve_device(config.device)
    if config.run:
        from genorder.runs import list_runs

        if not list_runs(config.run):
            raise UserError(f"no runs under {config.run} (expected model.json in it or in its sub-folders)")
        return
    specs = [parse_order_spec(s) for s in config.orders]
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise UserError(f"an order is listed twice: {', '.join(labels)}")
    for s in specs:
        registry("orders").create(s.name, _with_kv_option(s, config))  # bad options -> UserError


@contextmanager
def cpu_threads(config: BenchConfig, device: torch.device) -> Iterator[None]:
    """`config.threads` CPU threads inside, the previous count restored after (CPU devices only)."""
    old = torch.get_num_threads()
    if config.threads and device.type == "cpu":
        torch.set_num_threads(config.threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def ceilings_for(config: BenchConfig) -> DeviceCeilings | None:
    """The device ceilings `bench(config)` uses for its floors (cached; None when `floor` is off)."""
    if not config.floor:
        return None
    device = resolve_device(config.device)
    with cpu_threads(config, device):
        return device_ceilings(device, resolve_dtype(config.dtype, device))


def bench(config: BenchConfig, progress: BenchProgress | None = None) -> list[BenchRow]:
    """Time every order (or run) at every batch size on one device; see the module docstring."""
    validate(config)
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    with cpu_threads(config, device):
        ceilings = device_ceilings(device, dtype) if config.floor else None
        if config.run:
            from genorder.runs import list_runs

            n_subjects = len(list_runs(config.run))
        else:
            n_subjects = len(config.orders)
        total = n_subjects * len(config.batch_sizes)
        rows: list[BenchRow] = []
        with _dynamo_limits() if config.compile else nullcontext():
            for subject in build_subjects(config, device):
                base = len(rows)

                def tick(batch: int, what: str, _base=base) -> None:
                    if progress:
                        done = _base + config.batch_sizes.index(batch)
                        progress(done, max(total, done + 1), what)

                if isinstance(subject, FailedSubject):
                    rows.extend(subject.rows(config, device, dtype))
                    continue
                try:
                    rows.extend(_time_subject(subject, config, device, dtype, ceilings, tick))
                except PluginFailure as err:
                    rows.extend(FailedSubject(subject.label, subject.order_name, str(err)).rows(config, device, dtype))
                del subject
                if device.type == "cuda":
                    torch.cuda.empty_cache()
        if progress:
            progress(len(rows), len(rows), "done")
    add_ratios(rows, config.baseline)
    return rows


# ------------------------------------------------------------------------------------------------
# one training step (for benchmarks/)
# ------------------------------------------------------------------------------------------------
def make_train_step(order: Order, tokenizer: Tokenizer, model: GenModel, batch: int, device: torch.device,
                    amp: bool | None = None, seed: int = 0) -> Callable[[], torch.Tensor]:
    """One optimizer step of the shared trainer's recipe (bf16 autocast on CUDA, AdamW, grad clip 2)
    on random tokens; the tokenizer's encoder is not included (as VAR's own timing). Returns a
    closure that runs one step and returns the loss tensor (no host sync)."""
    g = torch.Generator(device=device).manual_seed(seed)
    V = tokenizer.codebook_size
    tokens = [torch.randint(0, V, (batch, p * p), device=device, generator=g) for p in tokenizer.scales]
    tb = order.training_batch(tokens, tokenizer, torch.Generator(device=device).manual_seed(seed))
    labels = torch.randint(0, model.num_classes, (batch,), device=device, generator=g)
    opt = torch.optim.AdamW(model.param_groups(0.05), lr=1e-4, betas=(0.9, 0.95), fused=device.type == "cuda")
    use_amp = device.type == "cuda" if amp is None else amp
    model.train()

    def step() -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            logits_BSV = model(tb.inputs, labels)
        loss = F.cross_entropy(logits_BSV.reshape(-1, logits_BSV.shape[-1]), tb.targets.reshape(-1), ignore_index=IGNORE)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 2.0)
        opt.step()
        return loss.detach()

    return step


def train_step_flops(model: GenModel, batch: int) -> float:
    return train_flops_per_sample(model) * batch


# ------------------------------------------------------------------------------------------------
# reports: JSON and a PNG plot (Pillow only)
# ------------------------------------------------------------------------------------------------
def report(config: BenchConfig, rows: list[BenchRow], ceilings: DeviceCeilings | None = None) -> dict[str, Any]:
    import platform

    return {
        "genorder_bench": 1,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "device": rows[0].device if rows else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": config.threads or torch.get_num_threads(),
        "config": config.model_dump(mode="json"),
        "ceilings": dataclasses.asdict(ceilings) if ceilings else None,
        "rows": [r.as_dict() for r in rows],
    }


def write_report(path: str | Path, data: dict[str, Any]) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(p)
    return p


def plot_throughput(rows: list[BenchRow], path: str | Path, title: str = "") -> Path:
    """Images/s against batch size, one line per order, both axes logarithmic."""
    from genorder.plot import line_plot

    series: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        if r.images_per_s:
            series.setdefault(r.order, []).append((r.batch, r.images_per_s))
    return line_plot(series, path, title or "images/s against batch size", "batch size (log scale)",
                     "images/s (log scale)", xlog=True, ylog=True, xticks_at_data=True)  # fmt: skip
