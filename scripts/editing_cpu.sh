#!/usr/bin/env bash
# docs/EDITING.md: the editing table and figure at a small CPU regime (8x8 tokens at 32 px, as the
# shared CPU regime, with fewer steps). Run from the repository root:
#   bash scripts/editing_cpu.sh [OUT]
# Each training command runs under /usr/bin/time; its CPU seconds go to OUT/cpu_seconds.txt.
# Step budgets, each capped by wall-clock minutes for a shared machine (the cap that stopped a run
# is in its summary.json / metrics.json).
set -euo pipefail
OUT=${1:-runs/editing}
G=${GENORDER:-.venv/bin/genorder}
mkdir -p "$OUT"
T() { /usr/bin/time -a -o "$OUT/cpu_seconds.txt" -f "%U user %S sys %e wall: $*" "$@"; }
TOK="--set tokenizer.ch_mult=[1,2,2] --set tokenizer.vocab_size=512 --batch-size 32 --lr 1e-3 --threads 2 --steps 150 --minutes 12"
[ -f "$OUT/tok-ms/tokenizer.safetensors" ] || \
  T $G train-tokenizer --tokenizer msvq-fmnist --set "tokenizer.scales=[1,2,3,4,6,8]" $TOK --out "$OUT/tok-ms"
[ -f "$OUT/tok-ss/tokenizer.safetensors" ] || \
  T $G train-tokenizer --tokenizer vq-fmnist --set "tokenizer.scales=[8]" $TOK --out "$OUT/tok-ss"
ORD="--depth 3 --steps 250 --minutes 5 --batch-size 64 --lr 2e-3"
[ -f "$OUT/next-scale/model.json" ] || T $G train --order next-scale $ORD --tokenizer "$OUT/tok-ms/tokenizer.safetensors" --out "$OUT/next-scale"
[ -f "$OUT/raster/model.json" ] || T $G train --order raster $ORD --tokenizer "$OUT/tok-ss/tokenizer.safetensors" --out "$OUT/raster"
[ -f "$OUT/maskgit/model.json" ] || T $G train --order maskgit $ORD --tokenizer "$OUT/tok-ss/tokenizer.safetensors" --out "$OUT/maskgit"
RUNS="--run $OUT/next-scale --run $OUT/raster --run $OUT/maskgit"
EDIT="--dataset fashion-mnist --n 50 --seeds 2 --cfg 1.5 --ref-n 500"
$G edit $RUNS $EDIT --mask center --out "$OUT/center"
$G edit $RUNS $EDIT --mask bottom --out "$OUT/bottom"
$G edit $RUNS $EDIT --mask center --class 1 --out "$OUT/center-class1"
# the figures in docs/EDITING.md (6 images, 2 seeds, no FID)
$G edit $RUNS --dataset fashion-mnist --n 6 --seeds 2 --cfg 1.5 --mask center --no-fid --out "$OUT/fig-center"
$G edit $RUNS --dataset fashion-mnist --n 6 --seeds 2 --cfg 1.5 --mask bottom --no-fid --out "$OUT/fig-bottom"
