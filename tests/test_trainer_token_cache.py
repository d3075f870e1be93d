"""The trainer's token cache (genorder.trainer_token_cache): a run with it has the losses, weights
and branch weights of a run that encodes every batch, for every registered order."""

from __future__ import annotations

import pytest
import torch

from genorder.budget import Budget
from genorder.cooldown import anneal_branch
from genorder.data import render_shapes, to_float
from genorder.model import BackboneConfig, build_model
from genorder.registry import registry
from genorder.trainer import TrainConfig, Trainer
from genorder.trainer_token_cache import TokenCache

TOKENIZERS = {"multi-scale": "msvq-tiny", "single-scale": "vq-tiny"}


class _Shapes(torch.utils.data.Dataset):
    """20 rendered 16 px shapes. Batches of 6 take 18 of them an epoch, so from the second epoch on a
    batch mixes cached images with new ones (encoded as a smaller batch)."""

    def __init__(self) -> None:
        images, self.labels = render_shapes(20, 16, seed=3)
        self.images = images[:, :1]
        self.num_classes = int(self.labels.max()) + 1
        self.reads = 0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        self.reads += 1
        return to_float(self.images[i]), int(self.labels[i])


def _trainer(order_name: str, out, cache: bool) -> tuple[Trainer, _Shapes]:
    order = registry("orders").create(order_name, {})
    torch.manual_seed(0)
    tok = registry("tokenizers").create(TOKENIZERS[order.tokenizer_kind], {}).eval()
    ds = _Shapes()
    torch.manual_seed(0)
    model = build_model(order, tok, BackboneConfig(depth=1, width=32, heads=2), ds.num_classes)
    cfg = TrainConfig(batch_size=6, lr=3e-3, budget=Budget(steps=12), schedule="wsd", cooldown=0.5, warmup=0.0,
                      device="cpu", checkpoint_every=None)  # fmt: skip
    tr = Trainer(order, tok, model, ds, cfg, out, {})
    if not cache:
        tr.token_cache = None
    return tr, ds


def _fit_with_branch(tr: Trainer) -> dict[str, torch.Tensor]:
    got: dict = {}

    def at_fork(frac, m):  # the 8-step run forks after step 4 and replays steps 4..7
        if m["step"] == 4:
            got["w"], _ = anneal_branch(tr, 8 / 12)

    tr.fit(progress=at_fork)
    return got["w"]


@pytest.mark.parametrize("order_name", registry("orders").names())
def test_cached_tokens_give_the_losses_and_weights_of_encoding_every_batch(order_name, tmp_path):
    plain, plain_ds = _trainer(order_name, tmp_path / "plain", cache=False)
    cached, cached_ds = _trainer(order_name, tmp_path / "cached", cache=True)
    assert cached.token_cache is not None and plain.token_cache is None
    w_plain, w_cached = _fit_with_branch(plain), _fit_with_branch(cached)
    assert [m["loss"] for m in cached.history] == [m["loss"] for m in plain.history]
    assert [m["acc"] for m in cached.history] == [m["acc"] for m in plain.history]
    assert all(torch.equal(w_cached[k], w_plain[k]) for k in w_plain)
    sd_plain, sd_cached = plain.model.state_dict(), cached.model.state_dict()
    assert all(torch.equal(sd_cached[k], sd_plain[k]) for k in sd_plain)
    # 16 steps of 6 (12 + the branch's 4) read 96 items without the cache, each image seen once with it
    seen = torch.unique(torch.cat([cached._indices(s) for s in range(12)]))
    assert plain_ds.reads == 96 and cached_ds.reads == len(seen)
    partial = [s for s in range(1, 12) if 0 < len(set(cached._indices(s).tolist()) - set(torch.cat(
        [cached._indices(t) for t in range(s)]).tolist())) < 6]  # fmt: skip
    assert partial  # some batches encoded only their new images
    assert cached.token_cache.enabled and torch.equal(torch.nonzero(cached.token_cache.have_N)[:, 0], seen)


def test_the_cache_returns_what_was_put_and_turns_off_when_too_large():
    tokens = [torch.randint(0, 9, (3, 1)), torch.randint(0, 9, (3, 2, 2))]
    cache = TokenCache(10)
    cache.put(torch.tensor([7, 2, 5]), tokens, torch.tensor([1, 0, 1]))
    assert cache.missing(torch.tensor([5, 1, 7, 1, 9])).tolist() == [1, 9]
    got, labels = cache.get(torch.tensor([5, 7, 5]))
    assert [t.shape for t in got] == [(3, 1), (3, 2, 2)] and got[0].dtype == tokens[0].dtype
    assert torch.equal(got[1], tokens[1][[2, 0, 2]]) and labels.tolist() == [1, 1, 1]
    small = TokenCache(10, max_bytes=10 * 5 * 4 - 1)  # one byte short of 10 rows of 5 int32 tokens
    small.put(torch.tensor([0, 1, 2]), tokens, torch.tensor([0, 0, 0]))
    assert not small.enabled and small.table_NL is None


def test_runs_of_one_process_share_the_cache_of_one_tokenizer_on_one_dataset(tmp_path):
    """Two raster runs (seeds 0 and 1) on one in-memory dataset with one tokenizer: the second starts
    with every token the first encoded and still has the losses of a run without the cache; another
    tokenizer's weights get another cache."""
    from genorder.data import ImageDataset, DatasetConfig
    from genorder.trainer_token_cache import cache_for

    class _Mem(ImageDataset):
        def __init__(self) -> None:
            super().__init__(DatasetConfig())
            images, labels = render_shapes(20, 16, seed=3)
            self._set_data(images[:, :1].contiguous(), labels, [f"c{i}" for i in range(int(labels.max()) + 1)])

    def run(seed: int, cache: bool, tok_seed: int = 0) -> Trainer:
        order = registry("orders").create("raster", {})
        torch.manual_seed(tok_seed)
        tok = registry("tokenizers").create("vq-tiny", {}).eval()
        torch.manual_seed(seed)
        model = build_model(order, tok, BackboneConfig(depth=1, width=32, heads=2), 4)
        cfg = TrainConfig(batch_size=6, lr=3e-3, budget=Budget(steps=6), device="cpu", seed=seed, checkpoint_every=None)
        tr = Trainer(order, tok, model, _Mem(), cfg, tmp_path / f"r{seed}{cache}{tok_seed}", {})
        if not cache:
            tr.token_cache = None
        tr.fit()
        return tr

    first = run(0, True)
    seen = int(first.token_cache.have_N.sum())
    second = run(1, True)
    assert second.token_cache is first.token_cache and int(second.token_cache.have_N.sum()) >= seen
    assert [m["loss"] for m in second.history] == [m["loss"] for m in run(1, False).history]
    other = run(1, True, tok_seed=1)
    assert other.token_cache is not first.token_cache
    assert cache_for(other.tokenizer, _Shapes()) is not cache_for(other.tokenizer, _Shapes())  # not an ImageDataset: per run
