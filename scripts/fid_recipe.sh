#!/usr/bin/env bash
# The papers' FID protocol in three commands (docs/EVAL.md): import the official VAR-d16 release,
# sample 50 per class on every GPU of the machine, score against ADM's reference batch.
#
#   bash scripts/fid_recipe.sh VAR_DIR REF_BATCH OUT [PER_CLASS=50] [NPROC=all GPUs]
#
# VAR_DIR holds vae_ch160v4096z32.pth and var_d16.pth (FoundationVision/VAR's release); REF_BATCH is
# VIRTUAL_imagenet256_labeled.npz (openai/guided-diffusion's evaluations). Writes OUT/var-d16 (the
# run), OUT/samples.npz (ADM format: arr_0 uint8 N x 256 x 256 x 3, arr_1 labels) and OUT/fid.json.
# Sampling: cfg 1.5, top-p 0.96, top-k 900 (VAR's README). PYTHON (default python3) is the Python
# genorder is installed in; EVAL_ARGS adds options to `eval` (e.g. --device cuda).
set -euo pipefail
if (($# < 3)); then
  echo "usage: bash scripts/fid_recipe.sh VAR_DIR REF_BATCH OUT [PER_CLASS] [NPROC]" >&2
  exit 2
fi
VAR_DIR=$1 REF=$2 OUT=$3 PER_CLASS=${4:-50}
PY=${PYTHON:-python3}
G="$PY -m genorder_cli.main"
NPROC=${5:-$($PY -c "import torch; print(max(1, torch.cuda.device_count()))")}
mkdir -p "$OUT"
[[ -f $OUT/var-d16/model.json ]] || $G import var --vae "$VAR_DIR/vae_ch160v4096z32.pth" \
  --var "$VAR_DIR/var_d16.pth" --dataset imagenet --out "$OUT/var-d16"
"$PY" -m torch.distributed.run --standalone --nproc_per_node "$NPROC" -m genorder_cli.main sample --run-dir "$OUT/var-d16" \
  --per-class "$PER_CLASS" --cfg 1.5 --top-p 0.96 --top-k 900 --seed 0 --npz "$OUT/samples.npz" --out "$OUT/grid.png"
$G eval --samples "$OUT/samples.npz" --ref-batch "$REF" --out "$OUT/fid.json" ${EVAL_ARGS:-}
