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
| `msvq-rgb32`  | 3 x 32  | 32 / (1,2)        | 2 enc, 3 dec | 32 | 1024 | (1,2,3,4,5,6,8,10,13,16) | 0.96M   |
| `vq-rgb32`    | 3 x 32  | 32 / (1,2)        | 2 enc, 3 dec | 32 | 1024 | (16,)                    | 0.93M   |
| `msvq-rgb64`  | 3 x 64  | 32 / (1,2,2)      | 2 enc, 3 dec | 32 | 1024 | (1,2,3,4,5,6,8,10,13,16) | 1.41M   |
| `vq-rgb64`    | 3 x 64  | 32 / (1,2,2)      | 2 enc, 3 dec | 32 | 1024 | (16,)                    | 1.38M   |
| `vq-256`      | 3 x 256 | as `msvq`         | 2 enc, 3 dec | 32 | 4096 | (16,)                    | 108.92M |

Each preset declares in `default_for` the (order kind, channels, image size) it is the default
tokenizer for; `genorder.tokenizer_training.default_tokenizer` chooses from these declarations (the
CLI knows no preset name).

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
from genorder.tokenizer import DefaultFor
from genorder_plugins.vqvae.tokenizer import MultiScaleVQVAE, MultiScaleVQVAEConfig, load_tokenizer

FMNIST_SCALES = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)


def preset(
    name: str, class_name: str, doc: str, default_for: tuple[DefaultFor, ...] = (), **defaults: Any
) -> type[MultiScaleVQVAE]:
    """A `MultiScaleVQVAE` subclass registered as `name` whose Config defaults are `defaults`;
    `default_for` declares the (order kind, channels, size) it is the default tokenizer for."""
    base = MultiScaleVQVAEConfig.model_fields
    fields = {}
    for key, value in defaults.items():
        info = copy.copy(base[key])
        info.default = value
        fields[key] = (base[key].annotation, info)
    config = create_model(f"{class_name}Config", __base__=MultiScaleVQVAEConfig, __doc__=doc, **fields)
    attrs = {"Config": config, "registry_name": name, "__doc__": doc, "__module__": __name__, "default_for": default_for}
    return type(class_name, (MultiScaleVQVAE,), attrs)


_FMNIST = dict(image_size=32, channels=1, ch=32, ch_mult=(1, 2), attn=False, mid_attn=True,
               latent_dim=32, vocab_size=1024)
_TINY = dict(image_size=16, channels=1, ch=16, ch_mult=(1, 2, 2), enc_res_blocks=1, dec_res_blocks=1,
             attn=False, mid_attn=True, latent_dim=8, vocab_size=64)

MS, SS = "multi-scale", "single-scale"  # the order kinds a preset serves

VAR256 = preset("var-256", "VAR256VQVAE", "VAR's released 256 px tokenizer (vae_ch160v4096z32).",
                default_for=(DefaultFor(MS, 3, 256),))
MSVQFmnist = preset("msvq-fmnist", "MSVQFmnist", "10-scale tokenizer for 32 px Fashion-MNIST.",
                    scales=FMNIST_SCALES, **_FMNIST)
VQFmnist = preset("vq-fmnist", "VQFmnist", "Single-scale (16x16) tokenizer for 32 px Fashion-MNIST.",
                  scales=(16,), phi_share=1, **_FMNIST)
MSVQTiny = preset("msvq-tiny", "MSVQTiny", "Tiny 16 px 3-scale tokenizer for tests.",
                  default_for=(DefaultFor(MS, 1, 16), DefaultFor(MS, 3, 16)), scales=(1, 2, 4), phi_share=0, **_TINY)
VQTiny = preset("vq-tiny", "VQTiny", "Tiny 16 px single-scale tokenizer for tests.",
                default_for=(DefaultFor(SS, 1, 16), DefaultFor(SS, 3, 16)), scales=(4,), phi_share=1, **_TINY)

# RGB presets (issue 11): CPU-sized 3x32 and 3x64 (the imagefolder default size), and the 256 px
# single-scale partner of var-256 for a GPU. The 64 px ones add one 2x downsampling so that the
# latent stays 16x16 and the scales stay Fashion-MNIST's.
_RGB32 = {**_FMNIST, "channels": 3}
_RGB64 = {**_FMNIST, "channels": 3, "image_size": 64, "ch_mult": (1, 2, 2)}
MSVQRgb32 = preset("msvq-rgb32", "MSVQRgb32", "10-scale RGB tokenizer for 32 px colour images (CPU).",
                   default_for=(DefaultFor(MS, 3, 32),), scales=FMNIST_SCALES, **_RGB32)
VQRgb32 = preset("vq-rgb32", "VQRgb32", "Single-scale (16x16) RGB tokenizer for 32 px colour images (CPU).",
                 default_for=(DefaultFor(SS, 3, 32),), scales=(16,), phi_share=1, **_RGB32)
MSVQRgb64 = preset("msvq-rgb64", "MSVQRgb64", "10-scale RGB tokenizer for 64 px colour images (CPU).",
                   default_for=(DefaultFor(MS, 3, 64),), scales=FMNIST_SCALES, **_RGB64)
VQRgb64 = preset("vq-rgb64", "VQRgb64", "Single-scale (16x16) RGB tokenizer for 64 px colour images (CPU).",
                 default_for=(DefaultFor(SS, 3, 64),), scales=(16,), phi_share=1, **_RGB64)
VQ256 = preset("vq-256", "VQ256", "Single-scale (16x16) partner of var-256 for 256 px colour images (GPU).",
               default_for=(DefaultFor(SS, 3, 256),), scales=(16,), phi_share=1)

# The CPU regime (issue 9): f = 4, so 8x8 tokens at 32 px (130 next-scale tokens, 64 raster/MaskGIT
# tokens), no attention, one res block per level: a step costs a fraction of msvq-fmnist's, so a few
# hundred steps fit in the 2-core budget of `genorder compare`. Measured figures: docs/RESULTS.md.
_FMNIST_CPU = dict(image_size=32, channels=1, ch=16, ch_mult=(1, 2, 2), enc_res_blocks=1, dec_res_blocks=1,
                   attn=False, mid_attn=False, latent_dim=16, vocab_size=512)
CPU_SCALES = (1, 2, 3, 4, 6, 8)
MSVQFmnistCPU = preset("msvq-fmnist-cpu", "MSVQFmnistCPU", "6-scale f=4 tokenizer (8x8 tokens) for 32 px Fashion-MNIST on a CPU.",
                       default_for=(DefaultFor(MS, 1, 32),), scales=CPU_SCALES, **_FMNIST_CPU)
VQFmnistCPU = preset("vq-fmnist-cpu", "VQFmnistCPU", "Single-scale 8x8 f=4 tokenizer for 32 px Fashion-MNIST on a CPU.",
                     default_for=(DefaultFor(SS, 1, 32),), scales=(8,), phi_share=1, **_FMNIST_CPU)

# Their colour twins (issue 25): 8x8 tokens for RGB images on a CPU, the default there for colour data
# (`DefaultFor(..., device="cpu")`; on a GPU the rgb32 / rgb64 presets above stay the default). At 32 px
# f = 4 as above; at 64 px (the imagefolder default size) one more 2x downsampling, f = 8, so the token
# grid stays 8x8: 130 next-scale tokens a 64 px image instead of 680.
_RGB32_CPU = {**_FMNIST_CPU, "channels": 3}
_RGB64_CPU = {**_FMNIST_CPU, "channels": 3, "image_size": 64, "ch_mult": (1, 2, 2, 2)}
MSVQRgb32CPU = preset("msvq-rgb32-cpu", "MSVQRgb32CPU", "6-scale f=4 RGB tokenizer (8x8 tokens) for 32 px colour images on a CPU.",
                      default_for=(DefaultFor(MS, 3, 32, device="cpu"),), scales=CPU_SCALES, **_RGB32_CPU)
VQRgb32CPU = preset("vq-rgb32-cpu", "VQRgb32CPU", "Single-scale 8x8 f=4 RGB tokenizer for 32 px colour images on a CPU.",
                    default_for=(DefaultFor(SS, 3, 32, device="cpu"),), scales=(8,), phi_share=1, **_RGB32_CPU)
MSVQRgb64CPU = preset("msvq-rgb64-cpu", "MSVQRgb64CPU", "6-scale f=8 RGB tokenizer (8x8 tokens) for 64 px colour images on a CPU.",
                      default_for=(DefaultFor(MS, 3, 64, device="cpu"),), scales=CPU_SCALES, **_RGB64_CPU)
VQRgb64CPU = preset("vq-rgb64-cpu", "VQRgb64CPU", "Single-scale 8x8 f=8 RGB tokenizer for 64 px colour images on a CPU.",
                    default_for=(DefaultFor(SS, 3, 64, device="cpu"),), scales=(8,), phi_share=1, **_RGB64_CPU)

PRESETS: dict[str, type[MultiScaleVQVAE]] = {
    "msvq": MultiScaleVQVAE,
    "var-256": VAR256,
    "msvq-fmnist": MSVQFmnist,
    "vq-fmnist": VQFmnist,
    "msvq-tiny": MSVQTiny,
    "vq-tiny": VQTiny,
    # issue 11: RGB presets
    "msvq-rgb32": MSVQRgb32,
    "vq-rgb32": VQRgb32,
    "msvq-rgb64": MSVQRgb64,
    "vq-rgb64": VQRgb64,
    "vq-256": VQ256,
    "msvq-fmnist-cpu": MSVQFmnistCPU,
    "vq-fmnist-cpu": VQFmnistCPU,
    # issue 25: the colour twins of the CPU presets, the CPU default for colour data
    "msvq-rgb32-cpu": MSVQRgb32CPU,
    "vq-rgb32-cpu": VQRgb32CPU,
    "msvq-rgb64-cpu": MSVQRgb64CPU,
    "vq-rgb64-cpu": VQRgb64CPU,
}


@hookimpl
def register_tokenizers(register):
    for name, cls in PRESETS.items():
        register(name, cls)


__all__ = ["PRESETS", "MultiScaleVQVAE", "MultiScaleVQVAEConfig", "load_tokenizer", "preset"]
