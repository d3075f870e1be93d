"""Sizing for the speed benchmarks: tiny on a CPU, the paper's configuration on a GPU.

    pytest benchmarks/ --benchmark-json=out.json                 # whatever this machine is
    pytest benchmarks/ --gen-resolution 256 --gen-depth 16       # force the paper's size
    pytest benchmarks/ --benchmark-disable                       # a smoke run: every path once
    pytest benchmarks/ --gen-compile                             # also time torch.compile'd sampling

On a CPU the session runs on one thread unless `--gen-threads N` says otherwise (`0`: torch's
default): with several threads, OpenMP on a shared machine makes the timings erratic.

The timed callables end with `genorder.timing.synchronize`, so pytest-benchmark's wall clock covers
the device work; the same helper times `genorder bench`.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from genorder.bench import PRESETS, resolve_device


@dataclass(frozen=True)
class Sizing:
    device: torch.device
    resolution: str  # "tiny" or "256"
    depth: int
    sample_batch: int
    train_batch: int
    dtype: torch.dtype  # inference dtype (training: fp32 weights, bf16 autocast on CUDA)
    rounds: int
    num_classes: int


def pytest_addoption(parser):
    g = parser.getgroup("genorder", "genorder speed benchmarks")
    g.addoption("--gen-device", default="auto", help="auto, cpu, cuda")
    g.addoption("--gen-resolution", choices=["tiny", "256"], default=None,
                help="default: 256 on CUDA, tiny on a CPU")
    g.addoption("--gen-depth", type=int, default=None, help="default: 16 on CUDA, 2 on a CPU")
    g.addoption("--gen-batch", type=int, default=None, help="sampling batch; default 64 on CUDA, 2 on a CPU")
    g.addoption("--gen-train-batch", type=int, default=None, help="training batch; default 32 on CUDA, 4 on a CPU")
    g.addoption("--gen-rounds", type=int, default=None, help="timed rounds; default 5 on CUDA, 3 on a CPU")
    g.addoption("--gen-threads", type=int, default=None,
                help="CPU threads; default 1 on a CPU (stable on shared machines), 0 keeps torch's default")
    g.addoption("--gen-compile", action="store_true",
                help="also time sampling through torch.compile (CUDA graphs on a GPU; compiling takes minutes)")


def pytest_generate_tests(metafunc):
    if "compiled" in metafunc.fixturenames:
        both = metafunc.config.getoption("--gen-compile")
        metafunc.parametrize("compiled", [False, True] if both else [False],
                             ids=["eager", "compiled"] if both else ["eager"])


@pytest.fixture(scope="session")
def sizing(request) -> Sizing:
    opt = request.config.getoption
    device = resolve_device(opt("--gen-device"))
    cuda = device.type == "cuda"
    threads = opt("--gen-threads")
    if not cuda and threads != 0:
        torch.set_num_threads(threads or 1)
    resolution = opt("--gen-resolution") or ("256" if cuda else "tiny")
    return Sizing(
        device=device,
        resolution=resolution,
        depth=opt("--gen-depth") or (16 if cuda else 2),
        sample_batch=opt("--gen-batch") or (64 if cuda else 2),
        train_batch=opt("--gen-train-batch") or (32 if cuda else 4),
        dtype=torch.bfloat16 if cuda else torch.float32,
        rounds=opt("--gen-rounds") or (5 if cuda else 3),
        num_classes=PRESETS[resolution]["num_classes"],
    )


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
    yield
