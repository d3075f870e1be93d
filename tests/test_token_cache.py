"""genorder.token_cache: a dataset's tokens encoded once, keyed by content, and trained from."""

from __future__ import annotations

import torch

from genorder.budget import Budget
from genorder.data import DatasetConfig, ImageDataset
from genorder.testing import TinyCodebookTokenizer, tiny_backbone
from genorder.token_cache import cache_key, cached_tokens, encode_dataset


def _dataset(seed: int = 0, n: int = 40) -> ImageDataset:
    g = torch.Generator().manual_seed(seed)
    ds = ImageDataset(DatasetConfig())
    ds._set_data(torch.randint(0, 256, (n, 1, 8, 8), generator=g, dtype=torch.uint8), torch.arange(n) % 2, ["a", "b"])
    return ds


def test_tokens_are_encoded_once_then_read_back_and_keyed_by_content(tmp_path):
    tok, ds = TinyCodebookTokenizer((2, 4), 16), _dataset()
    want = tok.encode(ds.get_batch(torch.arange(len(ds)))[0])
    first = cached_tokens(tok, ds, tmp_path)
    assert [t.dtype for t in first] == [torch.int16, torch.int16]
    assert all(torch.equal(a.long(), b) for a, b in zip(first, want))
    files = list(tmp_path.glob("tokens-*.safetensors"))
    assert len(files) == 1 and cache_key(tok, ds) in files[0].name
    mtime = files[0].stat().st_mtime_ns
    again = cached_tokens(tok, ds, tmp_path)
    assert files[0].stat().st_mtime_ns == mtime and all(torch.equal(a, b) for a, b in zip(first, again))
    other = _dataset(seed=1)  # other pixels: another key, another file
    assert cache_key(tok, other) != cache_key(tok, ds)
    cached_tokens(tok, other, tmp_path)
    assert len(list(tmp_path.glob("tokens-*.safetensors"))) == 2
    assert cache_key(TinyCodebookTokenizer((4,), 16), ds) != cache_key(tok, ds)  # another tokenizer
    assert [len(t) for t in encode_dataset(tok, ds, batch_size=7)] == [40, 40]  # batch size does not drop rows


def test_training_from_cached_tokens_follows_training_from_images(tmp_path):
    from genorder.model import build_model
    from genorder.trainer import Trainer, TrainConfig
    from genorder_plugins.raster import Raster

    ds, tok = _dataset(), TinyCodebookTokenizer((4,), 16)
    runs = []
    for tokens in (None, cached_tokens(tok, ds, tmp_path)):
        torch.manual_seed(0)
        order = Raster(Raster.Config())
        model = build_model(order, tok, tiny_backbone(depth=1), 2)
        tr = Trainer(order, tok, model, ds, TrainConfig(batch_size=8, lr=1e-3, budget=Budget(steps=6), log_every=1,
                                                        checkpoint_every=None), tmp_path / f"run{len(runs)}", {}, tokens=tokens)  # fmt: skip
        tr.fit()
        runs.append([m["loss"] for m in tr.history])
    assert runs[0] == runs[1] and len(runs[0]) == 6
