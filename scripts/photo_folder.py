"""A class-sorted image folder of real colour photos, for trying the "Your own images" recipe with
no internet: random crops of five photos that ship with scikit-image (`skimage.data`: astronaut,
chelsea the cat, coffee, rocket, the Hubble deep field), one class per photo, as 64 px PNGs in
OUT/<class>/NNNN.png. Needs scikit-image (`pip install scikit-image`; it is not a genorder
dependency).

    python scripts/photo_folder.py OUT [--per-class 300] [--seed 0]

The crops are seeded: the same arguments give the same files. A crop's side is drawn in
[min(H, W)/4, min(H, W)/2], flipped left-right with probability 1/2, then resized to 64 px.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--per-class", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=64)
    args = ap.parse_args()
    try:
        import skimage.data
    except ImportError:
        print("error: this script needs scikit-image: pip install scikit-image", file=sys.stderr)
        return 2
    if args.out.exists() and any(args.out.iterdir()):
        print(f"error: {args.out} is not empty", file=sys.stderr)
        return 2
    rng = np.random.default_rng(args.seed)
    for name in PHOTOS:
        photo = np.asarray(getattr(skimage.data, name)())[..., :3]  # (H, W, 3) uint8
        h, w = photo.shape[:2]
        folder = args.out / name
        folder.mkdir(parents=True)
        for i in range(args.per_class):
            side = int(rng.integers(min(h, w) // 4, min(h, w) // 2 + 1))
            y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            crop = photo[y : y + side, x : x + side]
            if rng.random() < 0.5:
                crop = crop[:, ::-1]
            img = Image.fromarray(np.ascontiguousarray(crop)).resize((args.size, args.size), Image.Resampling.LANCZOS)
            img.save(folder / f"{i:04d}.png")
    print(f"wrote {len(PHOTOS)} classes x {args.per_class} crops of {args.size} px to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
