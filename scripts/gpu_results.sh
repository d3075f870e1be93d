#!/usr/bin/env bash
# Every GPU measurement the docs mark "pending GPU run", as one script per device call (each < 10 min).
# Usage on the GPU machine, from the repo root, after
#   python3 -m pip install -q --no-index --no-deps .whl/*.whl && python3 -m pip install -q --no-index --no-deps --no-build-isolation -e .
# (wheels prepared on a CPU machine with `bash ../shared/device/wheels.sh`, Fashion-MNIST IDX files copied
# into data/fashion-mnist and GENORDER_FASHION_MNIST_DIR pointing there):
#   bash scripts/gpu_results.sh tokenizers   # msvq-fmnist + vq-fmnist, PSNR/usage targets   (~8 min)
#   bash scripts/gpu_results.sh speed        # d16 train MFU at batch 64, d16 256 px sampling   (~6 min)
#   bash scripts/gpu_results.sh compare      # raster / maskgit / next-scale, d8, 1500 steps x 2 seeds (duration not measured yet)
#   bash scripts/gpu_results.sh bench        # genorder bench at 256 px, d16, batch 1/16/64      (~8 min)
#   bash scripts/gpu_results.sh ablate       # the ablation rows, no FID on the device (2 calls per seed)
# Results land in $OUT (device tool) or ./gpu-results.
set -euo pipefail
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 GENORDER_FASHION_MNIST_DIR=${GENORDER_FASHION_MNIST_DIR:-data/fashion-mnist}
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo "nvidia-smi not found") | tee "$OUT/gpu.txt"
date -u | tee -a "$OUT/gpu.txt"
case "${1:-}" in
tokenizers)
  genorder train-tokenizer --tokenizer msvq-fmnist --minutes 3.5 --batch-size 128 --out runs/tokenizers/msvq-fmnist-fashion-mnist 2>&1 | tee "$OUT/tok-msvq.log"
  genorder train-tokenizer --tokenizer vq-fmnist --minutes 3.5 --batch-size 128 --out runs/tokenizers/vq-fmnist-fashion-mnist 2>&1 | tee "$OUT/tok-vq.log"
  cp runs/tokenizers/msvq-fmnist-fashion-mnist/metrics.json "$OUT/tok-msvq-metrics.json"
  cp runs/tokenizers/vq-fmnist-fashion-mnist/metrics.json "$OUT/tok-vq-metrics.json"
  cp runs/tokenizers/msvq-fmnist-fashion-mnist/reconstructions.png "$OUT/tok-msvq-recon.png"
  tar czf "$OUT/tokenizers.tgz" runs/tokenizers ;;
speed)
  tar xzf "${TOKENIZERS_TGZ:-gpu-in/tokenizers.tgz}"
  genorder train --order next-scale --depth 16 --batch-size 64 --steps 60 --out runs/mfu-d16 2>&1 | tee "$OUT/mfu-d16.log"
  cp runs/mfu-d16/log.jsonl "$OUT/mfu-d16-log.jsonl"
  genorder bench --orders next-scale --depth 16 --batch-sizes 1,64 --resolution 256 --json "$OUT/sample-d16.json" --plot "$OUT/sample-d16.png" 2>&1 | tee "$OUT/sample-d16.log" ;;
compare)
  tar xzf "${TOKENIZERS_TGZ:-gpu-in/tokenizers.tgz}"
  genorder compare --depth 8 --steps 1500 --batch-size 128 --seeds 0,1 --points 4 --n 500 --ref-n 5000 --fid-points last \
    --tokenizer runs/tokenizers/msvq-fmnist-fashion-mnist/tokenizer,runs/tokenizers/vq-fmnist-fashion-mnist/tokenizer \
    --out runs/compare 2>&1 | tee "$OUT/compare.log"
  cp runs/compare/comparison.png runs/compare/comparison_curves.png runs/compare/comparison.json runs/compare/comparison_timings.json "$OUT/"
  for o in next-scale raster maskgit; do cp "runs/compare/$o/seed0/log.jsonl" "$OUT/compare-$o-log.jsonl"; done ;;
bench)
  genorder bench --orders raster,next-scale,maskgit --depth 16 --batch-sizes 1,16,64 --resolution 256 \
    --json "$OUT/bench.json" --plot "$OUT/bench.png" 2>&1 | tee "$OUT/bench.log"
  genorder bench --orders raster --depth 16 --batch-sizes 1,16,64 --resolution 256 --no-kv-cache --tokens-only \
    --json "$OUT/bench-nocache.json" 2>&1 | tee "$OUT/bench-nocache.log" ;;
ablate)
  # one slice per device call (resumable, see docs/ABLATION.md §4); carry runs/ablate-fmnist from the last slice
  timeout 540 genorder ablate --preset fmnist --out runs/ablate-fmnist --no-eval --device cuda --seeds "${SEEDS:-0}" 2>&1 | tee "$OUT/ablate.log" || true
  tar czf "$OUT/ablate-fmnist.tgz" --exclude='*.safetensors' -C runs ablate-fmnist ;;
*) echo "usage: bash scripts/gpu_results.sh tokenizers|speed|compare|bench|ablate" >&2; exit 2 ;;
esac
