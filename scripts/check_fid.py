"""Check genorder's offline FID against the reference value in ../shared/reference/OFFLINE.md:
the first 500 Fashion-MNIST train images against the first 500 test images, at their native 28 px
(OFFLINE.md: FID 38.061 with torch-fidelity's own extractor) and padded to 32 px as genorder serves them.

    python scripts/check_fid.py
"""

from genorder.data import load_dataset
from genorder.metrics import compute_metrics

train = load_dataset("fashion-mnist", "train", limit=500).images  # (500, 1, 32, 32) uint8, 28 px padded
test = load_dataset("fashion-mnist", "test", limit=500).images
for name, a, b in [("28 px (native)", train[..., 2:30, 2:30], test[..., 2:30, 2:30]), ("32 px (padded)", train, test)]:
    fid = compute_metrics(a, b, kid=False, prc=False)["fid"]
    print(f"{name}: FID {fid:.3f}")
