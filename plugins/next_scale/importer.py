"""`genorder import var`: the released VAR checkpoints (VQVAE + transformer) as a next-scale run.

    genorder import var --vae vae_ch160v4096z32.pth --var var_d16.pth --out runs/var-d16

Both files are read with `torch.load(..., weights_only=True)` (or as safetensors, optionally the
names under a prefix); the architecture comes from the tensors (`genorder_plugins.vqvae.official`,
`genorder_plugins.next_scale.official`). `tests/test_import_var.py` checks the result against the
official code's own outputs.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from genorder.config import ComponentConfig
from genorder.importers import ImportedRun, Importer, read_state_dict, source_record
from genorder_plugins.vqvae import official as vae_official

from . import official as var_official
from .official import infer_scales


class VarImporter(Importer):
    """The official VAR release (FoundationVision/VAR: vae_ch160v4096z32.pth + var_d16..d30.pth)."""

    class Config(ComponentConfig):
        vae: Path = Field(description="the VQVAE file (vae_ch160v4096z32.pth, or .safetensors)")
        var: Path = Field(description="the VAR transformer file (var_d16.pth ... var_d30.pth, or .safetensors)")
        vae_prefix: str = Field("", description="keep only the VQVAE tensors whose name starts with this (and strip it)")
        var_prefix: str = Field("", description="keep only the VAR tensors whose name starts with this (and strip it)")
        heads: int | None = Field(None, ge=1, description="attention heads where the weights cannot tell (plain attention); default depth, as VAR")
        quant_resi: float = Field(0.5, gt=0.0, le=1.0, description="phi mixing ratio of the VQVAE (not stored in the weights; 0.5 in the release)")

    config: Config

    def load(self) -> ImportedRun:
        c = self.config
        var_state = read_state_dict(c.var, c.var_prefix)
        vae_state = read_state_dict(c.vae, c.vae_prefix)
        var_src, vae_src = f"{c.var} (VAR)", f"{c.vae} (VQVAE)"
        scales = infer_scales(var_state, var_src)
        tokenizer = vae_official.convert(vae_state, scales, c.quant_resi, source=vae_src)
        model, order, backbone = var_official.convert(var_state, tokenizer, c.heads, source=var_src)
        meta = {
            "sources": {"vae": source_record(c.vae, c.vae_prefix), "var": source_record(c.var, c.var_prefix)},
            "tokenizer": {"scales": list(scales), "quant_resi": c.quant_resi},
        }
        return ImportedRun("next-scale", order, "msvq", tokenizer, model, backbone, meta)
