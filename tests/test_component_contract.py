"""Contract tests for every registered tokenizer and dataset (built-in or third-party): a plugin added
through the `genorder` entry points is checked here without new tests.

Tokenizers: built on the meta device (no memory, so VAR's 109M-parameter preset costs nothing), they
must report consistent shape facts and reject unknown options; the small ones (<= 5M parameters)
must also round-trip a batch: encode gives one (B, p_k^2) int64 map per scale with ids in [0, V),
decode gives (B, C, H, W) in [-1, 1], decoding a prefix of the scales works, and encoding is
deterministic. Datasets: loading with no argument gives consistent arrays or a one-line UserError."""

from __future__ import annotations

import pytest
import torch
from helpers import one_thread

from genorder.data import ImageDataset, load_dataset
from genorder.errors import UserError
from genorder.registry import registry
from genorder.tokenizer import Tokenizer

SMALL = 5_000_000


def tokenizer_names() -> list[str]:
    return registry("tokenizers").names()


def params_on_meta(name: str) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in registry("tokenizers").create(name).parameters())


def small_tokenizer_names() -> list[str]:
    """Tokenizers cheap enough to run on the CPU here; the larger ones (VAR's 109M-parameter 256 px
    presets) share their class with a small one, and their shape facts are checked above."""
    return [n for n in tokenizer_names() if params_on_meta(n) <= SMALL]


def dataset_names() -> list[str]:
    return registry("datasets").names()


def test_every_builtin_is_registered():
    assert {"msvq", "var-256", "msvq-fmnist", "vq-fmnist", "msvq-tiny", "vq-tiny"} <= set(tokenizer_names())
    assert {"msvq-fmnist", "vq-fmnist", "msvq-tiny", "vq-tiny", "pixel"} <= set(small_tokenizer_names())
    assert {"fashion-mnist", "imagefolder", "npz", "shapes"} <= set(dataset_names())


@pytest.mark.parametrize("name", tokenizer_names())
def test_tokenizer_shape_facts(name):
    with torch.device("meta"):
        tok = registry("tokenizers").create(name)
    assert isinstance(tok, Tokenizer)
    scales = tuple(tok.scales)
    assert scales and all(isinstance(p, int) and p > 0 for p in scales)
    assert all(a < b for a, b in zip(scales, scales[1:])), "scales must be strictly increasing"
    assert tok.codebook_size >= 2 and tok.image_size > 0 and tok.channels in (1, 3, 4)
    with pytest.raises(UserError):
        registry("tokenizers").create(name, {"no_such_option": 1})


@pytest.mark.parametrize("name", small_tokenizer_names())
def test_small_tokenizers_round_trip(name):
    torch.manual_seed(0)
    tok = registry("tokenizers").create(name).eval()
    B, C, S = 2, tok.channels, tok.image_size
    x = torch.rand(B, C, S, S) * 2 - 1
    with one_thread():
        tokens = tok.encode(x)
        again = tok.encode(x)
        assert len(tokens) == len(tok.scales)
        for t, a, p in zip(tokens, again, tok.scales):
            assert t.shape == (B, p * p) and t.dtype == torch.int64
            assert int(t.min()) >= 0 and int(t.max()) < tok.codebook_size
            assert torch.equal(t, a)
        y = tok.decode(tokens)
        assert y.shape == (B, C, S, S) and torch.isfinite(y).all()
        assert float(y.min()) >= -1 and float(y.max()) <= 1
        assert tok.decode(tokens[:1]).shape == (B, C, S, S)


@pytest.mark.parametrize("name", dataset_names())
def test_dataset_loads_consistently_or_fails_with_a_user_error(name):
    try:
        ds = load_dataset(name, "train", limit=8)
    except UserError as err:  # e.g. imagefolder/npz without a path, fashion-mnist not installed
        assert str(err).strip() and "\n" not in str(err).strip()
        return
    assert isinstance(ds, ImageDataset) and 0 < len(ds) <= 8
    assert ds.images.dtype == torch.uint8 and ds.images.shape[1:] == (ds.channels, ds.image_size, ds.image_size)
    assert ds.labels.shape == (len(ds),) and int(ds.labels.max()) < ds.num_classes == len(ds.class_names)
    x, y = ds.get_batch(torch.arange(len(ds)))
    assert x.dtype == torch.float32 and float(x.min()) >= -1 and float(x.max()) <= 1
    assert torch.equal(y, ds.labels)
