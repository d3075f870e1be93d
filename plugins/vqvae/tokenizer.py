"""`MultiScaleVQVAE`: VAR's multi-scale residual VQVAE as a `genorder.tokenizer.Tokenizer`.

image (B, C, H, W) in [-1, 1] --Encoder--> quant_conv --> f (B, Cvae, h, w) --MultiScaleQuantizer-->
[ (B, p_k^2) ids ] --embed_to_fhat--> f_hat --post_quant_conv--> Decoder --> clamp to [-1, 1].

The class defaults are VAR's released 256 px tokenizer (`vae_ch160v4096z32`, 108,948,355 parameters);
named presets (`plugins/vqvae/__init__.py`) are subclasses whose Config has other defaults. A single
scale schedule `(16,)` makes it a plain VQVAE (what raster and MaskGIT orders use).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import Field, model_validator
from torch import nn

from genorder.config import ComponentConfig
from genorder.errors import UserError
from genorder.tokenizer import DefaultFor, TrainableTokenizer
from genorder_plugins.vqvae.nets import Decoder, Encoder, downsample_factor, init_conv_weights
from genorder_plugins.vqvae.quantizer import MultiScaleQuantizer
from genorder_plugins.vqvae.train import VQVAETraining, VQVAETrainConfig

VAR_SCALES_256 = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)


class MultiScaleVQVAEConfig(ComponentConfig):
    image_size: int = Field(256, gt=0, description="side H = W of the images, in pixels")
    channels: int = Field(3, ge=1, le=4, description="image channels (1 grey, 3 RGB)")
    ch: int = Field(160, gt=0, description="base width of the encoder/decoder convs")
    ch_mult: tuple[int, ...] = Field(
        (1, 1, 2, 2, 4),
        min_length=1,
        description="width multiplier per level; len - 1 = number of 2x downsamplings",
    )
    enc_res_blocks: int = Field(2, ge=1, description="res blocks per encoder level")
    dec_res_blocks: int = Field(3, ge=1, description="res blocks per decoder level (VAR: encoder's + 1)")
    attn: bool = Field(True, description="self-attention after every res block of the lowest-resolution level")
    mid_attn: bool = Field(True, description="self-attention in the middle block")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout inside res blocks")
    latent_dim: int = Field(32, gt=0, description="Cvae: width of latents and code vectors")
    vocab_size: int = Field(4096, ge=2, description="V: codes in the codebook shared by all scales")
    scales: tuple[int, ...] = Field(
        VAR_SCALES_256,
        min_length=1,
        description="side p_k of each token map, strictly increasing; the last equals the latent side",
    )
    phi_share: int = Field(
        4, ge=0, description="phi convs: 0 = one per scale, 1 = one shared by all, n = n partially shared"
    )
    quant_resi: float = Field(0.5, ge=0.0, le=1.0, description="phi mixing ratio r in (1-r) h + r conv(h); 0 = no phi")
    beta: float = Field(0.25, ge=0.0, description="commitment weight of the VQ loss")
    znorm: bool = Field(False, description="cosine code lookup (normalise both sides) instead of squared L2")
    code_init: float = Field(
        -1.0, description="codebook init: > 0 trunc-normal std; < 0 uniform +-|x|/V; 0 = PyTorch default"
    )

    @model_validator(mode="after")
    def _check(self) -> MultiScaleVQVAEConfig:
        f = downsample_factor(self.ch_mult)
        if self.image_size % f:
            raise ValueError(f"image_size {self.image_size} is not divisible by the downsample factor {f}")
        side = self.image_size // f
        if any(p <= 0 for p in self.scales) or any(a >= b for a, b in zip(self.scales, self.scales[1:])):
            raise ValueError(f"scales must be positive and strictly increasing, got {self.scales}")
        if self.scales[-1] != side:
            raise ValueError(
                f"the last scale must equal the latent side image_size / 2**(len(ch_mult)-1) = {side}, "
                f"got {self.scales[-1]}"
            )
        if any(m <= 0 for m in self.ch_mult):
            raise ValueError("ch_mult entries must be positive")
        return self


class MultiScaleVQVAE(TrainableTokenizer):
    """VAR's multi-scale residual VQVAE (defaults: the 256 px release, 10 scales, V 4096, 108.95M params)."""

    Config: ClassVar[type[MultiScaleVQVAEConfig]] = MultiScaleVQVAEConfig
    TrainConfig: ClassVar[type[VQVAETrainConfig]] = VQVAETrainConfig
    registry_name: ClassVar[str] = "msvq"
    default_for: ClassVar[tuple[DefaultFor, ...]] = ()
    low_precision_modules: ClassVar[tuple[str, ...]] = ("decoder", "post_quant_conv")  # the quantizer stays fp32

    def __init__(self, config: MultiScaleVQVAEConfig) -> None:
        super().__init__(config)
        c = config
        self.encoder = Encoder(
            c.channels, c.ch, c.ch_mult, c.enc_res_blocks, c.latent_dim, c.dropout, c.attn, c.mid_attn
        )
        self.decoder = Decoder(
            c.channels, c.ch, c.ch_mult, c.dec_res_blocks, c.latent_dim, c.dropout, c.attn, c.mid_attn
        )
        self.quant_conv = nn.Conv2d(c.latent_dim, c.latent_dim, 3, padding=1)
        self.post_quant_conv = nn.Conv2d(c.latent_dim, c.latent_dim, 3, padding=1)
        init_conv_weights(self)  # before the quantizer: phi convs keep PyTorch's default init
        self.quantizer = MultiScaleQuantizer(
            c.vocab_size, c.latent_dim, c.scales, c.phi_share, c.quant_resi, c.beta, c.znorm, c.code_init
        )

    # -- shape facts ----------------------------------------------------------------------------
    @property
    def codebook_size(self) -> int:
        return self.config.vocab_size

    @property
    def scales(self) -> tuple[int, ...]:
        return tuple(self.config.scales)

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def channels(self) -> int:
        return self.config.channels

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    @property
    def latent_side(self) -> int:
        return self.config.scales[-1]

    # -- training -------------------------------------------------------------------------------
    def latent(self, images_BChw: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> f (B, Cvae, h, w), the quant_conv output."""
        return self.quant_conv(self.encoder(images_BChw))

    def forward(self, images_BChw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
        """-> (reconstruction (B, C, H, W) unclamped, VQ loss (scalar fp32), per-scale usage %)."""
        self._check_images(images_BChw)
        f_hat, _, vq_loss, usages = self.quantizer(self.latent(images_BChw))
        return self.decoder(self.post_quant_conv(f_hat)), vq_loss, usages

    # -- the training protocol (genorder.TrainableTokenizer) ------------------------------------------
    def configure_training(self, config: VQVAETrainConfig) -> list[torch.optim.Optimizer]:
        self._training = VQVAETraining(self, config)
        return self._training.optimizers

    def training_step(self, images: torch.Tensor, step: int, fraction: float) -> dict[str, Any]:
        return self._training.step(images, step, fraction)

    def training_summary(self) -> dict[str, Any]:
        return self._training.summary()

    # -- the codec ------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> list[torch.Tensor]:
        self._check_images(images)
        return self.quantizer.quantize(self.latent(images))

    @torch.no_grad()
    def decode(self, tokens: list[torch.Tensor]) -> torch.Tensor:
        return self.latent_decode(self.quantizer.embed_to_fhat(tokens))

    # -- next-scale support ---------------------------------------------------------------------
    @torch.no_grad()
    def latent_inputs(self, tokens: list[torch.Tensor]) -> torch.Tensor:
        return self.quantizer.latent_inputs(tokens)

    @torch.no_grad()
    def latent_step(
        self, k: int, f_hat: torch.Tensor | None, codes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.quantizer.latent_step(k, f_hat, codes)

    @torch.no_grad()
    def latent_decode(self, f_hat: torch.Tensor) -> torch.Tensor:
        w = self.post_quant_conv.weight
        return self.decoder(self.post_quant_conv(f_hat.to(w.dtype))).clamp(-1, 1)

    def code_vectors(self, idx: torch.Tensor) -> torch.Tensor:
        return self.quantizer.embedding(idx)

    @property
    def codebook(self) -> torch.Tensor:
        return self.quantizer.codebook

    # -- helpers --------------------------------------------------------------------------------
    def _check_images(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.channels or x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            raise ValueError(
                f"{type(self).__name__} takes (B, {self.channels}, {self.image_size}, {self.image_size}) "
                f"images, got {tuple(x.shape)}"
            )

    def checkpoint_meta(self) -> dict[str, Any]:
        """What `load_tokenizer` needs to rebuild this tokenizer."""
        return {"component": "tokenizer", "name": self.registry_name, "config": self.config.model_dump(mode="json")}


def load_tokenizer(path: str | Path, device: str | torch.device = "cpu") -> MultiScaleVQVAE:
    """Rebuild a tokenizer saved by `train_tokenizer` (stem, .safetensors or .json path), in eval mode."""
    from genorder.checkpoint import load_checkpoint
    from genorder.registry import registry

    state, meta = load_checkpoint(path)
    if meta.get("component") != "tokenizer" or "name" not in meta or "config" not in meta:
        raise UserError(f"{path}: not a tokenizer checkpoint (its metadata has no tokenizer name/config)")
    tok = registry("tokenizers").create(meta["name"], meta["config"])
    if not isinstance(tok, MultiScaleVQVAE):
        raise UserError(f"{path}: tokenizer {meta['name']!r} is not a multi-scale VQVAE")
    missing, unexpected = tok.load_state_dict(state, strict=False)
    if unexpected or missing:
        raise UserError(f"{path}: checkpoint does not match tokenizer {meta['name']!r} "
                        f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})")
    return tok.to(device).eval()
