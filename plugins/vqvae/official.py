"""Official VAR VQVAE weights (`vae_ch160v4096z32.pth`) -> a `MultiScaleVQVAE`.

The official code (FoundationVision/VAR `models/vqvae.py`, `basic_vae.py`, `quant.py`) and this
plugin compute the same functions with different module names; this module holds the name mapping
and reads the architecture from the tensors themselves:

| official name                                   | genorder name                               |
|-------------------------------------------------|---------------------------------------------|
| `encoder.down.{i}.block.{j}.nin_shortcut`       | `encoder.levels.{i}.blocks.{j}.shortcut`    |
| `encoder.down.{i}.attn.{j}` / `.downsample`     | `encoder.levels.{i}.attns.{j}` / `.down`    |
| `{en,de}coder.mid.block_1` / `attn_1` / `block_2` | `mid_block1` / `mid_attn` / `mid_block2`  |
| `decoder.up.{i}` (i = 0 is the finest level)    | `decoder.levels.{n-1-i}` (0 = the coarsest) |
| `decoder.up.{i}.upsample`                       | `decoder.levels.{n-1-i}.up`                 |
| `quantize.embedding`                            | `quantizer.embedding`                       |
| `quantize.ema_vocab_hit_SV`                     | `quantizer.ema_hits_KV`                     |
| `quantize.quant_resi.qresi_ls.{i}` (partially shared φ), `.qresi` (one shared φ), `.{i}` (one per scale) | `quantizer.phis.{i}` |

Read from the tensors: ch (`encoder.conv_in`), ch_mult (each level's output width / ch), res
blocks per encoder and decoder level, attention at the lowest level and in the middle, Cvae
(`quant_conv`), V (`quantize.embedding`), the number of scales (`ema_vocab_hit_SV` rows) and the φ
sharing. Not in the tensors, so passed in: the scale sides (`patch_nums`, which the VAR file's
`lvl_1L` buffer gives) and the φ mixing ratio `quant_resi` (0.5 in the release).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from genorder_plugins.vqvae.tokenizer import MultiScaleVQVAE, MultiScaleVQVAEConfig
from pydantic import ValidationError

from genorder.config import format_validation_error
from genorder.errors import UserError
from genorder.importers import map_state, tensor


def _count(state: Mapping[str, torch.Tensor], pattern: str) -> int:
    """Number of distinct integers captured by `pattern` (group 1) over the state's names."""
    rx = re.compile(pattern)
    found = {int(m.group(1)) for k in state if (m := rx.fullmatch(k))}
    if found and found != set(range(len(found))):
        raise UserError(f"VQVAE weights: indices {sorted(found)} of {pattern!r} are not 0..{len(found) - 1}")
    return len(found)


def _need(state: Mapping[str, torch.Tensor], key: str, ndim: int | None = None) -> torch.Tensor:
    return tensor(state, key, "VQVAE weights", ndim=ndim, min_shape=(1,) * (ndim or 0))


def infer_config(state: Mapping[str, torch.Tensor], scales: tuple[int, ...], quant_resi: float = 0.5) -> MultiScaleVQVAEConfig:
    """The genorder tokenizer config of an official VQVAE state dict (see the module docstring)."""
    ch, channels = (int(n) for n in _need(state, "encoder.conv_in.weight", ndim=4).shape[:2])
    levels = _count(state, r"encoder\.down\.(\d+)\..*")
    if levels == 0:
        raise UserError("VQVAE weights: no encoder.down.* levels")
    ch_mult = []
    for i in range(levels):
        w = _need(state, f"encoder.down.{i}.block.0.conv2.weight", ndim=4)
        if w.shape[0] % ch:
            raise UserError(f"VQVAE weights: level {i} width {w.shape[0]} is not a multiple of ch {ch}")
        ch_mult.append(int(w.shape[0]) // ch)
    enc_blocks = _count(state, r"encoder\.down\.0\.block\.(\d+)\..*")
    dec_blocks = _count(state, r"decoder\.up\.0\.block\.(\d+)\..*")
    attn = _count(state, rf"encoder\.down\.{levels - 1}\.attn\.(\d+)\..*") > 0
    mid_attn = "encoder.mid.attn_1.qkv.weight" in state
    V, Cvae = (int(s) for s in _need(state, "quantize.embedding.weight", ndim=2).shape)
    K = int(_need(state, "quantize.ema_vocab_hit_SV", ndim=2).shape[0])
    if K != len(scales):
        raise UserError(f"VQVAE weights hold usage counts for {K} scales; the VAR model has {len(scales)} ({scales})")
    n_ls = _count(state, r"quantize\.quant_resi\.qresi_ls\.(\d+)\..*")
    n_non = _count(state, r"quantize\.quant_resi\.(\d+)\..*")
    if n_ls:
        phi_share = n_ls
    elif "quantize.quant_resi.qresi.weight" in state:
        phi_share = 1
    elif n_non:
        phi_share = 0
        if n_non != K:
            raise UserError(f"VQVAE weights: {n_non} unshared phi convs for {K} scales")
    else:  # quant_resi == 0: phi is the identity and has no weights
        phi_share, quant_resi = 1, 0.0
    try:
        return MultiScaleVQVAEConfig(
            image_size=scales[-1] * 2 ** (levels - 1), channels=channels, ch=ch, ch_mult=tuple(ch_mult),
            enc_res_blocks=enc_blocks, dec_res_blocks=dec_blocks, attn=attn, mid_attn=mid_attn,
            latent_dim=Cvae, vocab_size=V, scales=tuple(scales), phi_share=phi_share, quant_resi=quant_resi,
        )
    except ValueError as err:  # pydantic's ValidationError
        detail = format_validation_error(err, "tokenizer.") if isinstance(err, ValidationError) else str(err)
        raise UserError(f"VQVAE weights do not describe a valid tokenizer:\n{detail}") from None


def official_name(name: str, levels: int, phi_kind: str) -> str | None:
    """genorder state-dict name -> the official one (None: a genorder-only buffer)."""
    if name == "quantizer.ema_calls":
        return None
    if name == "quantizer.ema_hits_KV":
        return "quantize.ema_vocab_hit_SV"
    if name == "quantizer.embedding.weight":
        return "quantize.embedding.weight"
    if m := re.fullmatch(r"quantizer\.phis\.(\d+)\.(.*)", name):
        i, rest = m.groups()
        return {"ls": f"quantize.quant_resi.qresi_ls.{i}.{rest}", "shared": f"quantize.quant_resi.qresi.{rest}",
                "non": f"quantize.quant_resi.{i}.{rest}"}[phi_kind]
    out = name.replace(".mid_block1.", ".mid.block_1.").replace(".mid_attn.", ".mid.attn_1.")
    out = out.replace(".mid_block2.", ".mid.block_2.").replace(".shortcut.", ".nin_shortcut.")
    if m := re.fullmatch(r"encoder\.levels\.(\d+)\.(blocks|attns|down)\.(.*)", out):
        i, part, rest = m.groups()
        part = {"blocks": "block", "attns": "attn", "down": "downsample"}[part]
        return f"encoder.down.{i}.{part}.{rest}"
    if m := re.fullmatch(r"decoder\.levels\.(\d+)\.(blocks|attns|up)\.(.*)", out):
        i, part, rest = m.groups()
        part = {"blocks": "block", "attns": "attn", "up": "upsample"}[part]
        return f"decoder.up.{levels - 1 - int(i)}.{part}.{rest}"
    return out


def convert(state: Mapping[str, torch.Tensor], scales: tuple[int, ...], quant_resi: float = 0.5,
            source: str = "VQVAE") -> MultiScaleVQVAE:
    """Official VQVAE state dict -> a `MultiScaleVQVAE` holding exactly those weights (fp32, eval).

    Every official key must be used and every genorder weight filled with a tensor of its shape;
    otherwise a `UserError` names the first offending keys."""
    cfg = infer_config(state, scales, quant_resi)
    tok = MultiScaleVQVAE(cfg)
    phi_kind = "ls" if cfg.phi_share > 1 else ("non" if cfg.phi_share == 0 else "shared")
    new = map_state(state, tok.state_dict(), lambda name: official_name(name, len(cfg.ch_mult), phi_kind), source)
    tok.load_state_dict(new)
    return tok.eval()
