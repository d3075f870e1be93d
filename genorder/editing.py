"""Zero-shot editing: in-painting, out-painting and class-conditional editing with any order that
declares it (`Order.can_edit` / `Order.edit`), without retraining.

    region = parse_mask("center", 32)                 # (H, W) float, 1 = regenerate, 0 = keep the image
    keep = keep_maps(region, layout)                  # [(p_k^2,) bool]: True = the image's own token
    result = edit_images(run, images, region, labels, sampler, seed=0)

The mask reaches each token map as in VAR's zero-shot notebook (VAR_SPEC §4.6): the keep map
(1 - region) is resized to the p x p grid with bilinear interpolation (align_corners=False) and
thresholded at > 0.5; a map of 3 or fewer tokens is kept whole. The same rule serves every order,
so their results are compared on the same kept tokens.

Masks (`parse_mask`): `center` (the middle half in each direction), `left`, `right`, `top`, `bottom`
(that half of the image), `x0,y0,x1,y1` (a box in relative coordinates, 0..1, the region to
regenerate) or a PNG file (white = regenerate, resized to the image size).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange

from genorder.errors import UserError
from genorder.generation import make_generator
from genorder.layout import TokenLayout
from genorder.order import Progress
from genorder.sampler import Sampler

NAMED_MASKS = {  # region to regenerate, as a relative box (x0, y0, x1, y1)
    "center": (0.25, 0.25, 0.75, 0.75),
    "left": (0.0, 0.0, 0.5, 1.0),
    "right": (0.5, 0.0, 1.0, 1.0),
    "top": (0.0, 0.0, 1.0, 0.5),
    "bottom": (0.0, 0.5, 1.0, 1.0),
}
KEEP_WHOLE_UPTO = 3  # token maps of at most this many tokens are kept whole (VAR's notebook)
FID_MIN_IMAGES = 100  # below this many edited images a FID is mostly small-n bias: it is skipped, with a note


def fid_skip_note(n: int) -> str | None:
    """Why no FID is computed on `n` edited images (None: enough of them)."""
    if n >= FID_MIN_IMAGES:
        return None
    return (f"FID skipped: {n} edited images, fewer than {FID_MIN_IMAGES} (a FID on so few is mostly its "
            "small-n bias); raise --n / --seeds")


def box_region(box: tuple[float, float, float, float], size: int) -> torch.Tensor:
    """(size, size) float: 1 inside the relative box (pixel centres inside [x0, x1) x [y0, y1))."""
    x0, y0, x1, y1 = box
    c = (torch.arange(size, dtype=torch.float32) + 0.5) / size  # pixel centres
    inside_y = (c >= y0) & (c < y1)
    inside_x = (c >= x0) & (c < x1)
    return (inside_y[:, None] & inside_x[None, :]).float()


def parse_mask(spec: str, size: int) -> torch.Tensor:
    """A mask spec -> (size, size) float region in [0, 1] (1 = regenerate). Bad specs: `UserError`."""
    s = spec.strip()
    if s in NAMED_MASKS:
        return box_region(NAMED_MASKS[s], size)
    if s.lower().endswith(".png") or Path(s).is_file():
        p = Path(s)
        if not p.is_file():
            raise UserError(f"--mask: {p} not found")
        from PIL import Image, UnidentifiedImageError

        try:
            img = Image.open(p).convert("L").resize((size, size), Image.BILINEAR)
        except (OSError, UnidentifiedImageError) as err:
            raise UserError(f"--mask: cannot read {p} as an image: {err}") from None
        import numpy as np

        return torch.from_numpy(np.asarray(img, dtype=np.float32).copy()) / 255.0
    parts = s.split(",")
    if len(parts) == 4:
        try:
            x0, y0, x1, y1 = (float(v) for v in parts)
        except ValueError:
            raise UserError(f"--mask: box {spec!r} must be four numbers x0,y0,x1,y1") from None
        if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
            raise UserError(f"--mask: box {spec!r} needs 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1 (relative coordinates)")
        return box_region((x0, y0, x1, y1), size)
    names = ", ".join(NAMED_MASKS)
    raise UserError(f"--mask: {spec!r} is not a mask; give one of {names}, a box x0,y0,x1,y1 or a PNG file")


def keep_maps(region_HW: torch.Tensor, layout: TokenLayout, keep_whole_upto: int = KEEP_WHOLE_UPTO) -> list[torch.Tensor]:
    """(H, W) region (1 = regenerate) -> one (p_k^2,) bool keep map per scale, row-major: bilinear
    resize of 1 - region to p_k x p_k, then > 0.5; maps of <= `keep_whole_upto` tokens all True."""
    keep_11HW = (1.0 - region_HW.float())[None, None]
    out = []
    for p in layout.scales:
        k_pp = F.interpolate(keep_11HW, size=(p, p), mode="bilinear", align_corners=False)[0, 0] > 0.5
        if p * p <= keep_whole_upto:
            k_pp = torch.ones_like(k_pp)
        out.append(rearrange(k_pp, "h w -> (h w)"))
    return out


def pixel_keep(region_HW: torch.Tensor) -> torch.Tensor:
    """(H, W) bool: the pixels the edit should leave as the image (region < 0.5)."""
    return region_HW < 0.5


def masked_psnr(a: torch.Tensor, b: torch.Tensor, where_HW: torch.Tensor) -> float:
    """PSNR (dB, images in [-1, 1], peak-to-peak 2) over the pixels where `where_HW` is True."""
    if not bool(where_HW.any()):
        return float("nan")
    d = (a.float() - b.float()).square()[..., where_HW]  # (B, C, n)
    mse = float(d.mean())
    return float("inf") if mse == 0.0 else 10.0 * math.log10(4.0 / mse)


@dataclass
class EditResult:
    tokens: list[torch.Tensor]  # [(B, p_k^2)] edited token maps
    images: torch.Tensor  # (B, C, H, W) decoded, in [-1, 1]
    original_tokens: list[torch.Tensor]  # the images' own tokens
    reconstruction: torch.Tensor  # (B, C, H, W) decode(original_tokens)
    keep: list[torch.Tensor]  # [(p_k^2,) bool]


def edit_refusal(run, region_HW: torch.Tensor) -> str | None:
    """None when the run's order can edit with this region, else its reason."""
    layout = run.order.layout(run.tokenizer)
    return run.order.can_edit(layout, keep_maps(region_HW, layout))


@torch.no_grad()
def edit_images(
    run,
    images: torch.Tensor,
    region_HW: torch.Tensor,
    labels: torch.Tensor,
    sampler: Sampler,
    seed: int = 0,
    progress: Progress | None = None,
) -> EditResult:
    """Edit (B, C, H, W) images in [-1, 1] with `run` (a `genorder.runs.Run`): tokens outside the
    region are the images' own, the region is generated for `labels` (the null class: pure
    in-/out-painting). Raises `UserError` with the order's reason when it cannot edit."""
    tok, order, model = run.tokenizer, run.order, run.model
    if images.shape[1:] != (tok.channels, tok.image_size, tok.image_size):
        raise UserError(f"{run.path}: the tokenizer takes {tok.channels}x{tok.image_size}px images, got "
                        f"{images.shape[1]}x{images.shape[-1]}px")  # fmt: skip
    layout = order.layout(tok)
    keep = keep_maps(region_HW, layout)
    reason = order.can_edit(layout, keep)
    if reason is not None:
        raise UserError(f"{run.order_name} cannot make this edit: {reason}")
    dev = next(model.parameters()).device
    x = images.to(dev)
    original = tok.encode(x)
    g = make_generator(seed, dev)
    tokens = order.edit(model, tok, original, keep, labels.to(dev), sampler, g, progress)
    edited = tok.decode(tokens).float().clamp(-1, 1).cpu()
    recon = tok.decode(original).float().clamp(-1, 1).cpu()
    return EditResult([t.cpu() for t in tokens], edited, [t.cpu() for t in original], recon, keep)


def edit_metrics(result: EditResult, region_HW: torch.Tensor) -> dict[str, float]:
    """Agreement with the tokenizer's reconstruction outside the region: kept tokens (exact: 1.0),
    and pixels (PSNR against the reconstruction); how much the region changed."""
    kept = sum(int(k.sum()) for k in result.keep)
    same = sum(int((t == o)[:, k].sum()) for t, o, k in zip(result.tokens, result.original_tokens, result.keep))
    B = result.images.shape[0]
    free = [~k for k in result.keep]
    n_free = sum(int(f.sum()) for f in free)
    changed = sum(int((t != o)[:, f].sum()) for t, o, f in zip(result.tokens, result.original_tokens, free))
    outside = pixel_keep(region_HW)
    return {
        "kept_tokens": kept,
        "generated_tokens": n_free,
        "kept_token_agreement": same / (kept * B) if kept else float("nan"),
        "generated_tokens_changed": changed / (n_free * B) if n_free else float("nan"),
        "outside_psnr_vs_reconstruction": masked_psnr(result.images, result.reconstruction, outside),
        "inside_psnr_vs_reconstruction": masked_psnr(result.images, result.reconstruction, ~outside),
    }


def class_accuracy(dataset_spec: str, images: torch.Tensor, labels: torch.Tensor, device="cpu",
                   progress: Progress | None = None, cache_root: str | Path | None = None) -> dict:
    """Accuracy of the dataset's class-consistency classifier (`genorder.classifier`) on edited
    images against the requested labels: {"acc", "lo", "hi", "n", "classifier_test_accuracy"}, or
    {"pending": reason} where that classifier is not available in this installation."""
    try:
        from genorder import classifier as clf  # built by the "Comparisons that measure the order" issue
    except ImportError:
        return {"pending": "genorder.classifier is not available in this installation"}
    where = {} if cache_root is None else {"cache_root": cache_root}
    model, info = clf.load_or_train_classifier(dataset_spec, device=device, progress=progress,
                                               image_size=int(images.shape[-1]), **where)  # at the edited images' size
    out = clf.class_accuracy(model, images, labels)
    return {**out, "classifier_test_accuracy": info.get("test_accuracy")}
