"""The multi-scale residual VQVAE tokenizer (VAR_SPEC §1) and its named presets.

Registered tokenizers (all the same class, `MultiScaleVQVAE`; a preset only changes Config defaults,
so any field can still be overridden, e.g. `create("msvq-fmnist", {"vocab_size": 1024})`):

| name          | image   | ch / ch_mult      | res blocks | Cvae | V    | scales                   | params  |
|---------------|---------|-------------------|------------|------|------|--------------------------|---------|
| `msvq`        | 3 x 256 | 160 / (1,1,2,2,4) | 2 enc, 3 dec | 32 | 4096 | (1,2,3,4,5,6,8,10,13,16) | 108.95M |
| `var-256`     | same as `msvq`: VAR's released tokenizer, exactly 108,948,355 parameters                  |
| `msvq-fmnist` | 1 x 32  | 32 / (1,2)        | 2 enc, 3 dec | 32 | 1024 | (1,2,3,4,5,6,8,10,13,16) | 0.96M   |
| `vq-fmnist`   | 1 x 32  | 32 / (1,2)        | 2 enc, 3 dec | 32 | 1024 | (16,)                    | 0.93M   |
| `msvq-fmnist-cpu` | 1 x 32 | 16 / (1,2,2)  | 1 enc, 1 dec | 16 | 512  | (1,2,3,4,6,8)            | 0.22M   |
| `vq-fmnist-cpu`   | 1 x 32 | 16 / (1,2,2)  | 1 enc, 1 dec | 16 | 512  | (8,)                     | 0.22M   |
| `msvq-tiny`   | 1 x 16  | 16 / (1,2,2)      | 1 enc, 1 dec | 8  | 64   | (1,2,4)                  | 0.20M   |
| `vq-tiny`     | 1 x 16  | 16 / (1,2,2)      | 1 enc, 1 dec | 8  | 64   | (4,)                     | 0.20M   |

Attention: `msvq`/`var-256` after every res block of the lowest level plus the middle block; the
small presets only in the middle block (at the 16 x 16 latent for Fashion-MNIST). The tiny presets
exist for tests and smoke runs and take `channels` 1 or 3. Single-scale presets use one phi
(`phi_share=1`), `msvq-tiny` one per scale (`phi_share=0`), the others VAR's 4 shared ones.

Fashion-MNIST choices:
  * ch 32, not 64: the ch-64 variant has 3.5M parameters and about 4x the FLOPs per image, so in a
    CPU-time budget it gets a quarter of the steps.
  * V = 1024, not VAR's 4096: the code lookups, which dominate encoding at 680 tokens x V, are 4x
    cheaper, and a 16x16 Fashion-MNIST latent has far fewer distinct patches to code.
    `--set tokenizer.vocab_size=4096` gives the paper's value.
  * Dead-code restarts are on by default: without them the codebook collapses (measured in
    docs/RESULTS.md §2: 18.5% against 96.1% of the codes used at the last scale after 500 steps).
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import create_model

from genorder import hookimpl
from genorder_plugins.vqvae.tokenizer import MultiScaleVQVAE, MultiScaleVQVAEConfig, load_tokenizer

FMNIST_SCALES = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)


def preset(name: str, class_name: str, doc: str, **defaults: Any) -> type[MultiScaleVQVAE]:
    """A `MultiScaleVQVAE` subclass registered as `name` whose Config defaults are `defaults`."""
    base = MultiScaleVQVAEConfig.model_fields
    fields = {}
    for key, value in defaults.items():
        info = copy.copy(base[key])
        info.default = value
        fields[key] = (base[key].annotation, info)
    config = create_model(f"{class_name}Config", __base__=MultiScaleVQVAEConfig, __doc__=doc, **fields)
    return type(class_name, (MultiScaleVQVAE,), {"Config": config, "registry_name": name, "__doc__": doc, "__module__": __name__})


_FMNIST = dict(image_size=32, channels=1, ch=32, ch_mult=(1, 2), attn=False, mid_attn=True,
               latent_dim=32, vocab_size=1024)
_TINY = dict(image_size=16, channels=1, ch=16, ch_mult=(1, 2, 2), enc_res_blocks=1, dec_res_blocks=1,
             attn=False, mid_attn=True, latent_dim=8, vocab_size=64)

VAR256 = preset("var-256", "VAR256VQVAE", "VAR's released 256 px tokenizer (vae_ch160v4096z32).")
MSVQFmnist = preset("msvq-fmnist", "MSVQFmnist", "10-scale tokenizer for 32 px Fashion-MNIST.",
                    scales=FMNIST_SCALES, **_FMNIST)
VQFmnist = preset("vq-fmnist", "VQFmnist", "Single-scale (16x16) tokenizer for 32 px Fashion-MNIST.",
                  scales=(16,), phi_share=1, **_FMNIST)
MSVQTiny = preset("msvq-tiny", "MSVQTiny", "Tiny 16 px 3-scale tokenizer for tests.",
                  scales=(1, 2, 4), phi_share=0, **_TINY)
VQTiny = preset("vq-tiny", "VQTiny", "Tiny 16 px single-scale tokenizer for tests.",
                scales=(4,), phi_share=1, **_TINY)

# The CPU regime (issue 9): f = 4, so 8x8 tokens at 32 px (130 next-scale tokens, 64 raster/MaskGIT
# tokens), no attention, one res block per level: a step costs a fraction of msvq-fmnist's, so a few
# hundred steps fit in the 2-core budget of `genorder compare`. Measured figures: docs/RESULTS.md.
_FMNIST_CPU = dict(image_size=32, channels=1, ch=16, ch_mult=(1, 2, 2), enc_res_blocks=1, dec_res_blocks=1,
                   attn=False, mid_attn=False, latent_dim=16, vocab_size=512)
CPU_SCALES = (1, 2, 3, 4, 6, 8)
MSVQFmnistCPU = preset("msvq-fmnist-cpu", "MSVQFmnistCPU", "6-scale f=4 tokenizer (8x8 tokens) for 32 px Fashion-MNIST on a CPU.",
                       scales=CPU_SCALES, **_FMNIST_CPU)
VQFmnistCPU = preset("vq-fmnist-cpu", "VQFmnistCPU", "Single-scale 8x8 f=4 tokenizer for 32 px Fashion-MNIST on a CPU.",
                     scales=(8,), phi_share=1, **_FMNIST_CPU)

PRESETS: dict[str, type[MultiScaleVQVAE]] = {
    "msvq": MultiScaleVQVAE,
    "var-256": VAR256,
    "msvq-fmnist": MSVQFmnist,
    "vq-fmnist": VQFmnist,
    "msvq-tiny": MSVQTiny,
    "vq-tiny": VQTiny,
    "msvq-fmnist-cpu": MSVQFmnistCPU,
    "vq-fmnist-cpu": VQFmnistCPU,
}


@hookimpl
def register_tokenizers(register):
    for name, cls in PRESETS.items():
        register(name, cls)


__all__ = ["PRESETS", "MultiScaleVQVAE", "MultiScaleVQVAEConfig", "load_tokenizer", "preset"]
