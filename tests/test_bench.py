"""`genorder bench`: the library at tiny size, counted FLOPs on hand-checkable cases, the speed levers
keeping the numbers, and the CLI (files written, table printed, bad options exit 2 writing nothing)."""

from __future__ import annotations

import json
import os

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode
from typer.testing import CliRunner

from genorder.bench import (
    BenchConfig,
    DeviceCeilings,
    StepRunner,
    _dynamo_limits,
    bench,
    build_subjects,
    decoder_flops,
    device_ceilings,
    floor_seconds,
    generation_steps,
    parse_order_spec,
    plot_throughput,
)
from genorder.errors import UserError
from genorder.flops import generation_flops, visible_pairs
from genorder.generation import make_generator
from genorder.layout import TokenLayout, block_causal_groups
from genorder.model import BackboneConfig, build_model
from genorder.registry import registry
from genorder.sampler import StandardSampler
from genorder.timing import peak_memory, synchronize, time_fn

ORDERS = registry("orders").names()
VAR_SCALES = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
SAMPLER = StandardSampler.Config(cfg=1.5, top_k=900, top_p=0.95)


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Device ceilings are cached under a temporary folder; one thread keeps timings stable."""
    monkeypatch.setenv("GENORDER_CACHE_DIR", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(order_name: str, depth: int = 2, **order_opts):
    """(order, tokenizer, model) at the tiny preset, random weights, CPU, eval mode."""
    order = registry("orders").create(order_name, order_opts)
    tok_name = "msvq-tiny" if order.tokenizer_kind == "multi-scale" else "vq-tiny"
    tok = registry("tokenizers").create(tok_name, {"channels": 3}).eval()
    return order, tok, build_model(order, tok, BackboneConfig(depth=depth), 10).eval()


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


# ------------------------------------------------------------------------------------------------
# timing helpers
# ------------------------------------------------------------------------------------------------
def test_time_fn_counts_calls_and_reports_medians():
    calls = []
    t = time_fn(lambda: calls.append(1), "cpu", warmup=2, repeats=3)
    assert len(calls) == 5 and t.repeats == 3 and t.warmup == 2
    assert t.min_s <= t.median_s <= t.max_s and all(s >= 0 for s in t.all_s)
    assert peak_memory("cpu") is None
    synchronize("cpu")  # a no-op, must not fail
    with pytest.raises(ValueError):
        time_fn(lambda: None, "cpu", repeats=0)


# ------------------------------------------------------------------------------------------------
# the library at tiny size
# ------------------------------------------------------------------------------------------------
def test_bench_tiny_all_orders_gives_positive_timings_and_counted_flops():
    assert {"raster", "next-scale", "maskgit"} <= set(ORDERS)
    cfg = BenchConfig(orders=ORDERS, resolution="tiny", depth=1, batch_sizes=[1, 2], warmup=1, repeats=2)
    seen = []
    rows = bench(cfg, progress=lambda done, total, info: seen.append((done, total)))
    assert len(rows) == 2 * len(ORDERS)
    assert seen[-1][0] == seen[-1][1] == len(rows)
    for r in rows:
        assert r.error is None
        assert r.latency_s > 0 and r.images_per_s > 0 and r.ms_per_image > 0 and r.decode_s > 0
        assert r.images_per_s == pytest.approx(r.batch / r.latency_s)
        assert r.transformer_gflops_per_image > 0 and r.decode_gflops_per_image > 0
        assert r.gflops_per_image == pytest.approx(r.transformer_gflops_per_image + r.decode_gflops_per_image)
        # decode and full latency are separate medians: under machine load their ratio may pass 1
        assert r.decode_share == pytest.approx(r.decode_s / r.latency_s) and r.decode_share > 0
        assert r.floor_s > 0 and r.floor_fraction > 0
        assert r.params > 0 and r.steps >= 1 and r.depth == 1 and r.cfg
    by = {(r.order, r.batch): r for r in rows}
    assert by[("raster", 1)].steps == 16 and by[("next-scale", 1)].steps == 3 and by[("maskgit", 1)].steps == 8
    for b in (1, 2):
        assert by[("raster", b)].ratio_to_baseline == pytest.approx(1.0)
        assert by[("next-scale", b)].ratio_to_baseline == pytest.approx(
            by[("raster", b)].latency_s / by[("next-scale", b)].latency_s)


def test_report_files(tmp_path):
    from genorder.bench import report, write_report

    cfg = BenchConfig(orders=["next-scale"], resolution="tiny", depth=1, batch_sizes=[1, 2], warmup=0,
                      repeats=1, include_decode=False, baseline=None, floor=False)
    rows = bench(cfg)
    assert all(r.decode_share is None and r.floor_s is None and r.ratio_to_baseline is None for r in rows)
    assert rows[0].gflops_per_image == pytest.approx(rows[0].transformer_gflops_per_image)
    data = report(cfg, rows)
    write_report(tmp_path / "b.json", data)
    back = json.loads((tmp_path / "b.json").read_text())
    assert back["rows"][0]["order"] == "next-scale" and back["config"]["batch_sizes"] == [1, 2]
    png = plot_throughput(rows, tmp_path / "b.png", "t")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_order_specs_and_bad_configs():
    s = parse_order_spec("raster:kv_cache=false:multiscale=true")
    assert (s.name, s.options) == ("raster", {"kv_cache": False, "multiscale": True})
    with pytest.raises(UserError, match="unknown order"):
        parse_order_spec("nope")
    with pytest.raises(UserError):
        bench(BenchConfig(orders=["raster:bogus=1"], resolution="tiny"))
    with pytest.raises(UserError, match="twice"):
        bench(BenchConfig(orders=["raster", "raster"], resolution="tiny"))


def test_bench_times_a_trained_run(tmp_path):
    from genorder.checkpoint import save_checkpoint
    from genorder.runs import run_meta, save_tokenizer

    order, tok, model = tiny("raster", depth=1)
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    save_tokenizer(tok, "vq-tiny", run / "tokenizer")
    save_checkpoint(run / "model", model.state_dict(),
                    run_meta("raster", order, model.cfg, model))
    cfg = BenchConfig(run=str(tmp_path / "runs"), batch_sizes=[1], warmup=0, repeats=1, kv_cache=False)
    (row,) = bench(cfg)
    assert row.order == "r1 (raster)" and row.kv_cache is False and row.latency_s > 0 and row.depth == 1
    with pytest.raises(UserError, match="no runs"):
        bench(BenchConfig(run=str(tmp_path / "nothing")))


def test_bench_finds_compares_order_seed_layout(tmp_path):
    """`bench --run runs/compare` takes compare's ORDER/seedN runs (two levels down), labelled by
    their path, and does not mistake a run's checkpoints for runs."""
    from genorder.checkpoint import save_checkpoint
    from genorder.runs import list_runs, run_meta, save_tokenizer

    order, tok, model = tiny("raster", depth=1)
    root = tmp_path / "compare"
    for seed in (0, 1):
        run = root / "raster" / f"seed{seed}"
        run.mkdir(parents=True)
        save_tokenizer(tok, "vq-tiny", run / "tokenizer")
        meta = run_meta("raster", order, model.cfg, model)
        save_checkpoint(run / "model", model.state_dict(), meta)
        save_checkpoint(run / "checkpoints" / "step-000000001" / "model", model.state_dict(), meta)
    (root / "tokenizers" / "x").mkdir(parents=True)  # compare's other folders hold no model.json
    assert list_runs(root) == [root / "raster" / "seed0", root / "raster" / "seed1"]
    assert list_runs(root / "raster" / "seed0") == [root / "raster" / "seed0"]
    rows = bench(BenchConfig(run=str(root), batch_sizes=[1], warmup=0, repeats=1, kv_cache=False, floor=False))
    assert [r.order for r in rows] == ["raster/seed0 (raster)", "raster/seed1 (raster)"]


# ------------------------------------------------------------------------------------------------
# counted FLOPs
# ------------------------------------------------------------------------------------------------
def test_generation_steps_hand_checked():
    order, tok, _ = tiny("raster")
    lay = order.layout(tok)  # 4 x 4 = 16 tokens
    assert generation_steps(order, lay) == [(1, i + 1, i + 1) for i in range(16)]
    order_nc, _, _ = tiny("raster", kv_cache=False)
    assert generation_steps(order_nc, lay) == [(i + 1, i + 1, (i + 1) * (i + 2) // 2) for i in range(16)]
    mg, tok_mg, _ = tiny("maskgit")
    assert generation_steps(mg, mg.layout(tok_mg)) == [(17, 17, 17 * 17)] * 8  # class token + 16


def test_next_scale_steps_sum_to_the_block_causal_pairs():
    order = registry("orders").create("next-scale", {})
    lay = TokenLayout(VAR_SCALES)
    steps = generation_steps(order, lay)
    assert [s[0] for s in steps] == [p * p for p in VAR_SCALES]
    assert [s[1] for s in steps] == [e for _, e in lay.bounds] and steps[-1][1] == 680
    assert sum(s[2] for s in steps) == visible_pairs(block_causal_groups(lay))
    assert sum(s[0] for s in steps) == 680  # with the cache, every position is fed exactly once
    nc = registry("orders").create("next-scale", {"kv_cache": False})
    assert generation_steps(nc, lay)[-1][2] == visible_pairs(block_causal_groups(lay))


def test_raster_without_cache_costs_more_attention_and_more_flops():
    order, tok, model = tiny("raster")
    order_nc, _, _ = tiny("raster", kv_cache=False)
    lay = order.layout(tok)
    cached, uncached = generation_steps(order, lay), generation_steps(order_nc, lay)
    pairs_c, pairs_u = sum(s[2] for s in cached), sum(s[2] for s in uncached)
    L = lay.length
    assert pairs_c == L * (L + 1) // 2  # O(L^2) = O(n^4)
    assert pairs_u == sum((i + 1) * (i + 2) // 2 for i in range(L))  # O(L^3) = O(n^6)
    assert pairs_u > pairs_c
    assert generation_flops(model, uncached, True) > generation_flops(model, cached, True)
    assert generation_flops(model, cached, True) == pytest.approx(2 * generation_flops(model, cached, False))


@pytest.mark.parametrize("order_name,exact", [("raster", True), ("maskgit", True), ("next-scale", False)])
def test_counted_flops_match_a_flop_counter_over_a_real_generation(order_name, exact):
    """FlopCounterMode over a real `generate` (math attention, so attention matmuls are visible)
    equals the per-step count; next-scale differs only by the tokenizer's phi convs between steps and
    the word embedding the count charges to the start token (< 1%)."""
    order, tok, model = tiny(order_name)
    counter = FlopCounterMode(display=False)
    with counter, sdpa_kernel(SDPBackend.MATH):
        order.generate(model, tok, torch.tensor([1, 2, 3]), StandardSampler(SAMPLER), make_generator(0, "cpu"))
    from genorder.bench import timed_generation_flops

    once = model.cfg.adaln and getattr(order.config, "kv_cache", False)  # memoised on the KV cache
    counted = timed_generation_flops(model, generation_steps(order, order.layout(tok)), True, once) * 3
    if exact:
        assert counter.get_total_flops() == counted
    else:
        assert counter.get_total_flops() == pytest.approx(counted, rel=0.01)


def test_adaln_once_accounting_matches_the_counter():
    """With the step runner the AdaLN matmuls run once per generation: the counted matmul FLOPs
    (everything but attention) drop by (T - 1) x the AdaLN FLOPs, as `timed_generation_flops` says."""
    from genorder.bench import adaln_flops, timed_generation_flops

    order, tok, model = tiny("raster")
    steps = generation_steps(order, order.layout(tok))
    counter = FlopCounterMode(display=False)
    with counter, sdpa_kernel(SDPBackend.MATH):
        order.generate(StepRunner(model, static=True), tok, torch.tensor([1, 2]), StandardSampler(SAMPLER),
                       make_generator(0, "cpu"))
    linear = sum(v for k, v in counter.get_flop_counts()["Global"].items() if str(k) in ("aten.addmm", "aten.mm"))
    attention = 4 * model.cfg.C * sum(s[2] for s in steps) * len(model.blocks) * 2  # CFG
    assert linear == 2 * (timed_generation_flops(model, steps, True, adaln_once=True) - attention)
    assert timed_generation_flops(model, steps, True, True) == pytest.approx(
        generation_flops(model, steps, True) - 15 * 2 * adaln_flops(model))


def test_decoder_flops_counted_on_fake_tensors_match_a_real_decode():
    tok = registry("tokenizers").create("vq-tiny", {"channels": 3}).eval()
    counter = FlopCounterMode(display=False)
    with counter, sdpa_kernel(SDPBackend.MATH), torch.no_grad():
        tok.decode([torch.zeros(1, 16, dtype=torch.long)])
    assert decoder_flops(tok) == counter.get_total_flops() > 0


def test_floor_and_ceiling_cache(tmp_path, monkeypatch):
    c = device_ceilings(torch.device("cpu"), torch.float32)
    assert c.matmul_flops > 0 and c.bandwidth > 0
    cache = json.loads((tmp_path / "cache" / "device_ceilings.json").read_text())
    assert len(cache) == 1
    import genorder.bench as gb

    monkeypatch.setattr(gb, "measure_ceilings", lambda *a: pytest.fail("measured twice"))
    assert device_ceilings(torch.device("cpu"), torch.float32) == c
    # raster: 16 steps each reading at least the weights; compute-bound ceiling at infinite bandwidth
    order, tok, model = tiny("raster")
    steps = generation_steps(order, order.layout(tok))
    slow_mem = DeviceCeilings("x", "float32", matmul_flops=1e30, bandwidth=1e6, measured="-")
    f1 = floor_seconds(model, steps, 1, True, slow_mem, 4, cached=True)
    f64 = floor_seconds(model, steps, 64, True, slow_mem, 4, cached=True)
    from genorder.bench import linear_weight_bytes

    assert f1 >= 16 * linear_weight_bytes(model, 4) / 1e6
    assert f64 > f1  # the KV cache read grows with the batch
    fast_mem = DeviceCeilings("x", "float32", matmul_flops=1e9, bandwidth=1e30, measured="-")
    assert floor_seconds(model, steps, 2, True, fast_mem, 4, cached=True) == pytest.approx(
        2 * generation_flops(model, steps, True) / 1e9)


# ------------------------------------------------------------------------------------------------
# speed levers keep the numbers
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("order_name,opts", [
    ("raster", {}), ("raster", {"kv_cache": False}), ("next-scale", {}), ("maskgit", {}),
])
def test_static_steps_give_identical_tokens(order_name, opts):
    order, tok, model = tiny(order_name, **opts)
    labels = torch.tensor([1, 7, 3])
    ref = order.generate(model, tok, labels, StandardSampler(SAMPLER), make_generator(0, "cpu"))
    runner = StepRunner(model, static=True)
    for _ in range(2):  # the second generation reuses the persistent cache with stale entries in it
        assert same(ref, order.generate(runner, tok, labels, StandardSampler(SAMPLER), make_generator(0, "cpu")))


def test_static_step_logits_match_the_model():
    """The static cached step (whole cache, position mask, index_copy_) against GenModel.forward."""
    order, tok, model = tiny("raster")
    labels = torch.tensor([1, 2])
    ids = torch.randint(0, tok.codebook_size, (2, 15))
    runner = StepRunner(model, static=True)
    with torch.inference_mode():
        ref = model(ids, labels)  # teacher-forced: (2, 16, V)
        cache_m, cache_r = model.new_cache(2), runner.new_cache(2)
        x = torch.zeros(2, 0, dtype=torch.long)
        for i in range(16):
            a = model(x, labels, start=i, cache=cache_m)
            b = runner(x, labels, start=i, cache=cache_r)
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(b[:, 0], ref[:, i], rtol=1e-4, atol=1e-4)
            x = ids[:, i : i + 1]


@pytest.mark.parametrize("order_name", ["raster", "maskgit"])
def test_compiled_path_traces_whole_and_keeps_tokens(order_name):
    """torch.compile with the trace-only backend: the per-step body must capture as one graph
    (fullgraph) and give the same tokens; inductor itself is checked below (GPU, or opt-in CPU)."""
    order, tok, model = tiny(order_name, depth=1)
    labels = torch.tensor([4, 5])
    ref = order.generate(model, tok, labels, StandardSampler(SAMPLER), make_generator(0, "cpu"))
    runner = StepRunner(model, static=True, compile=True, compile_backend="eager",
                        compile_plain=order_name == "maskgit")
    with _dynamo_limits():
        out = order.generate(runner, tok, labels, StandardSampler(SAMPLER), make_generator(0, "cpu"))
    assert same(ref, out)


def _compiled_equality(device: str, dtype: torch.dtype):
    cfg = BenchConfig(orders=ORDERS, resolution="tiny", depth=2, device=device, floor=False)
    dev = torch.device(device)
    for subject in build_subjects(cfg, dev):
        from genorder.bench import autocast_for, cast_for_inference

        cast_for_inference(subject, dtype)
        order, tok, model = subject.order, subject.tokenizer, subject.model
        labels = torch.tensor([1, 2, 3], device=dev)
        with autocast_for(dev, dtype):
            ref = order.generate(model, tok, labels, StandardSampler(SAMPLER), make_generator(0, dev))
            fixed = len(set(generation_steps(order, order.layout(tok)))) == 1
            runner = StepRunner(model, static=True, compile=True, compile_plain=fixed)
            with _dynamo_limits():
                for _ in range(3):  # warm-up, CUDA-graph recording, replay
                    out = order.generate(runner, tok, labels, StandardSampler(SAMPLER), make_generator(0, dev))
                    assert same(ref, out), subject.label


@pytest.mark.gpu
def test_compiled_cuda_graphs_give_identical_tokens():
    _compiled_equality("cuda", torch.float32)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("GENORDER_TEST_INDUCTOR"), reason="inductor on a CPU compiles for minutes; "
                    "set GENORDER_TEST_INDUCTOR=1")
def test_compiled_inductor_cpu_gives_identical_tokens():
    _compiled_equality("cpu", torch.float32)


# ------------------------------------------------------------------------------------------------
# the CLI
# ------------------------------------------------------------------------------------------------
@pytest.fixture
def cli(tmp_path, monkeypatch):
    from genorder_cli.main import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "120")
    runner = CliRunner()
    return lambda *args: runner.invoke(app, ["bench", *map(str, args)])


def test_cli_writes_json_and_png_and_prints_the_table(cli, tmp_path):
    res = cli("--resolution", "tiny", "--depth", "1", "--batch-sizes", "1,2", "--warmup", "0", "--repeats", "1",
              "--orders", "raster,next-scale", "--json", tmp_path / "out" / "b.json")
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "out" / "b.json").read_text())
    assert [r["order"] for r in data["rows"]] == ["raster", "raster", "next-scale", "next-scale"]
    assert all(r["latency_s"] > 0 and r["gflops_per_image"] > 0 for r in data["rows"])
    assert (tmp_path / "out" / "b.png").read_bytes()[:4] == b"\x89PNG"
    for word in ("images/s", "ms/batch", "GFLOP/img", "next-scale", "× raster", "%floor"):
        assert word in res.output


def test_cli_out_folder(cli, tmp_path):
    res = cli("--resolution", "tiny", "--depth", "1", "--batch-sizes", "1", "--warmup", "0", "--repeats", "1",
              "--orders", "raster", "--no-cfg", "--out", tmp_path / "mine")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "mine" / "bench-tiny-d1.json").is_file() and (tmp_path / "mine" / "bench-tiny-d1.png").is_file()
    assert not (tmp_path / "runs").exists()


def test_cli_defaults_to_tiny_on_a_cpu_and_says_so(cli, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    res = cli("--orders", "next-scale", "--batch-sizes", "1", "--warmup", "0", "--repeats", "1", "--no-cfg")
    assert res.exit_code == 0, res.output
    assert "no CUDA device" in res.output and "tiny" in res.output
    assert (tmp_path / "runs" / "bench" / "bench-tiny-d2.json").is_file()
    assert (tmp_path / "runs" / "bench" / "bench-tiny-d2.png").is_file()


@pytest.mark.parametrize("args,message", [
    (["--orders", "raster,bogus"], "unknown order"),
    (["--batch-sizes", "1,0"], "batch_sizes"),
    (["--batch-sizes", "one"], "could not parse"),
    (["--orders", "raster:kv_cache=maybe"], "kv_cache"),
    (["--run", "missing-dir"], "no runs"),
])
def test_cli_bad_options_exit_2_and_write_nothing(cli, tmp_path, args, message):
    res = cli("--resolution", "tiny", "--json", tmp_path / "x" / "b.json", *args)
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert not (tmp_path / "x").exists() and not (tmp_path / "runs").exists()
    assert not (tmp_path / "cache").exists()  # not even the device ceilings were measured


def test_bf16_cast_follows_the_tokenizers_declaration():
    """`cast_for_inference` casts the backbone and the modules the tokenizer declares in
    `low_precision_modules` (the VQVAE's decoder), never the quantizer."""
    from genorder.bench import Subject, cast_for_inference

    order, tok, model = tiny("raster", depth=1)
    cast_for_inference(Subject("r", "raster", order, tok, model), torch.bfloat16)
    assert next(model.parameters()).dtype == torch.bfloat16
    assert tok.low_precision_modules and all(
        p.dtype == torch.bfloat16 for name in tok.low_precision_modules for p in getattr(tok, name).parameters())
    assert all(p.dtype == torch.float32 for p in tok.quantizer.parameters())
