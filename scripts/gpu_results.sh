#!/usr/bin/env bash
# Every GPU measurement the docs mark "pending GPU run", as ONE part that fits one device call:
#
#   bash scripts/gpu_results.sh all             # on the GPU: <= 9 minutes (GPU_RESULTS_BUDGET_S, default 525 s)
#   bash scripts/gpu_results.sh all --dry-run   # the same flow on a CPU at tiny sizes (CI: tests/test_gpu_script.py)
#
# Before the GPU run, on a CPU machine, from the project root: `bash ../shared/device/wheels.sh` (the
# wheels the GPU machine lacks, into .whl/). On the GPU machine (device tool `run`, carry [".whl"]), the
# script runs the install line itself, then the parts in priority order, each under its own `timeout`
# and never past the overall deadline:
#   (a) speed table, d16, 256 px, CFG 1.5: next-scale and MaskGIT with the decode included, raster
#       (static KV cache) tokens only, eager; raster compiled (CUDA graphs); next-scale and MaskGIT tokens
#       only; batch 1, 16, 64 (every row also times the decode alone, so both figures exist for all);
#   (b) d16 training step at batch 64 and 128: images/s, MFU, peak memory, FlexAttention against SDPA;
#   (c) what fits after: next-scale and MaskGIT compiled, raster without a KV cache (the paper's
#       baseline) at batch 1;
#   (d) a 5k-sample FID by the papers' protocol (scripts/fid_recipe.sh: import var, torchrun sample,
#       eval --ref-batch), when the release files and the reference batch are there; the GPU-only tests.
# Results are written as each part finishes: $OUT/status.json (per part: rc, seconds, timed out or
# not), the main JSON reports (speed-*.json, train-step.json) and $OUT/results.tgz (every JSON, log
# and plot; results-*.json only there). That is 7 files, under the 8 the device tool brings back.
# $OUT defaults to ./gpu-results.
#
# --dry-run: CPU, --resolution tiny, depth 1, batch 1,2, one timed call; the wheel step runs
# ../shared/device/wheels.sh in a scratch folder (or takes GPU_RESULTS_WHEELS=DIR), and the install line
# is checked with `pip install --dry-run` against Python 3.12 wheels (pip cannot install them into
# this Python); `--compile` becomes `--static-step` (the same step runner, no inductor: compiling
# takes minutes on a CPU); the training step runs SDPA only (FlexAttention has no backward on a CPU).
set -uo pipefail

MODE=${1:-}
DRY=0
[[ ${2:-} == --dry-run ]] && DRY=1
if [[ $MODE != all || ( -n ${2:-} && $DRY == 0 ) ]]; then
  echo "usage: bash scripts/gpu_results.sh all [--dry-run]" >&2
  exit 2
fi

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-results.XXXXXX")
RES=$WORK/results
mkdir -p "$RES"
PY=${PYTHON:-python3}
G="$PY -m genorder_cli.main"
export PYTHONUNBUFFERED=1 COLUMNS=140 GENORDER_CACHE_DIR=$WORK/cache
T0=$(date +%s)
if [[ $DRY == 1 ]]; then
  BUDGET=${GPU_RESULTS_BUDGET_S:-330}  # 240 before the fid-5k part (about 60 s at these sizes)
  DEV="--device cpu --threads 1"
  SIZE="--resolution tiny --depth 1 --batch-sizes 1,2"
  REP="--warmup 0 --repeats 1"
  RREP=$REP
  COMPILE="--static-step"
  TRAIN="--resolution tiny --depth 1 --batch-sizes 2,4 --warmup 0 --repeats 1 --device cpu --threads 1"
  BACKENDS=sdpa  # FlexAttention has no backward on a CPU
else
  BUDGET=${GPU_RESULTS_BUDGET_S:-525}
  DEV=""
  SIZE="--resolution 256 --depth 16 --batch-sizes 1,16,64"
  REP="--warmup 2 --repeats 5"
  RREP="--warmup 1 --repeats 3"  # raster: 256 sequential steps a call
  COMPILE="--compile"
  TRAIN="--resolution 256 --depth 16 --batch-sizes 64,128 --warmup 3 --repeats 10"
  BACKENDS=flex,sdpa
fi
RESERVE=15  # seconds kept for the last packing

pack() {  # status.json, the main JSON reports and results.tgz in $OUT; written after every part
  "$PY" - "$WORK/status.jsonl" "$OUT/status.json" "$DRY" "$BUDGET" <<'EOF'
import json, sys, datetime, pathlib
src, dst, dry, budget = sys.argv[1:5]
parts = [json.loads(l) for l in pathlib.Path(src).read_text().splitlines() if l.strip()]
gpu = pathlib.Path(src).with_name("gpu.txt")
out = {"script": "scripts/gpu_results.sh all", "dry_run": dry == "1", "budget_s": int(budget),
       "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
       "gpu": gpu.read_text().strip() if gpu.is_file() else None, "parts": parts}
tmp = pathlib.Path(dst + ".part")
tmp.write_text(json.dumps(out, indent=2))
tmp.replace(dst)
EOF
  for f in "$RES"/*.json; do
    [[ -f $f ]] && [[ $(basename "$f") != results-*.json ]] && cp "$f" "$OUT/$(basename "$f").part" && mv "$OUT/$(basename "$f").part" "$OUT/$(basename "$f")"
  done
  tar czf "$OUT/results.tgz.part" -C "$WORK" results status.jsonl $( [[ -f $WORK/gpu.txt ]] && echo gpu.txt ) 2>/dev/null \
    && mv "$OUT/results.tgz.part" "$OUT/results.tgz"
}

part() {  # part NAME LIMIT_S COMMAND: run under its own timeout, never past the deadline; record it
  local name=$1 limit=$2 cmd=$3
  local now left t rc start
  now=$(date +%s)
  left=$((BUDGET - RESERVE - (now - T0)))
  t=$((limit < left ? limit : left))
  if ((t < 10)); then
    printf '{"part": "%s", "rc": null, "seconds": 0, "limit_s": %d, "timed_out": false, "skipped": "no time left"}\n' \
      "$name" "$t" >>"$WORK/status.jsonl"
    echo "== $name: skipped, no time left" | tee -a "$RES/$name.log"
    pack
    return
  fi
  echo "== $name (limit ${t}s): $cmd" | tee -a "$RES/$name.log"
  start=$(date +%s)
  timeout --signal=TERM --kill-after=10 "$t" bash -c "$cmd" >>"$RES/$name.log" 2>&1
  rc=$?
  printf '{"part": "%s", "rc": %d, "seconds": %d, "limit_s": %d, "timed_out": %s}\n' "$name" "$rc" \
    "$(($(date +%s) - start))" "$t" "$([[ $rc == 124 || $rc == 137 ]] && echo true || echo false)" >>"$WORK/status.jsonl"
  tail -n 3 "$RES/$name.log"
  pack
}

: >"$WORK/status.jsonl"
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "nvidia-smi not found") >"$WORK/gpu.txt"
"$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA device')" >>"$WORK/gpu.txt" 2>&1
date -u >>"$WORK/gpu.txt"

# 0. wheels and the install line
if [[ $DRY == 1 ]]; then
  WHL=${GPU_RESULTS_WHEELS:-}
  if [[ -z $WHL ]]; then  # wheels.sh writes ./.whl and .git/info/exclude: run it in a scratch folder
    mkdir -p "$WORK/wheels/.git/info"
    if [[ -f $ROOT/../shared/device/wheels.sh ]]; then
      part wheels 120 "cd '$WORK/wheels' && bash '$ROOT/../shared/device/wheels.sh'"
    else  # a checkout without shared/ beside it: the same download wheels.sh makes
      part wheels 120 "mkdir -p '$WORK/wheels/.whl' && $PY -m pip download -q --no-deps --only-binary=:all: \
        --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d '$WORK/wheels/.whl' pydantic pydantic-core annotated-types \
        typing-inspection typing-extensions torch-fidelity"
    fi
    WHL=$WORK/wheels/.whl
  fi
  part install 120 "$PY -m pip install -q --dry-run --no-index --no-deps --ignore-installed --only-binary=:all: \
    --python-version 3.12 --implementation cp --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux_2_28_x86_64 --target '$WORK/target' --report '$RES/results-install-report.json' '$WHL'/*.whl \
    && $PY -m pip install -q --dry-run --no-index --no-deps --no-build-isolation -e ."
else
  part install 120 "$PY -m pip install -q --no-index --no-deps .whl/*.whl && $PY -m pip install -q --no-index --no-deps --no-build-isolation -e ."
fi

B="$G bench $DEV $SIZE"
# (a) the speed table
part speed-eager 150 "$B --orders next-scale,maskgit $REP --json $RES/speed-eager.json \
  && $B --orders raster --tokens-only $RREP --json $RES/speed-raster.json"
# batch 1 first, in its own process and file: a compile that runs long still leaves batch 1 timed
part speed-raster-compiled 200 "$B --orders raster --tokens-only $COMPILE $REP --batch-sizes 1 --json $RES/speed-raster-compiled-b1.json \
  && $B --orders raster --tokens-only $COMPILE $REP --batch-sizes ${SIZE##*--batch-sizes 1,} --json $RES/speed-raster-compiled.json"
part speed-tokens 60 "$B --orders next-scale,maskgit --tokens-only $REP --json $RES/results-tokens.json"
# (b) the training step
part train-step 150 "$PY scripts/train_step_speed.py $TRAIN --orders next-scale --backends $BACKENDS --json $RES/train-step.json"
# (c) whatever fits
part speed-compiled 150 "$B --orders next-scale,maskgit $COMPILE $REP --json $RES/results-compiled.json"
part raster-nocache 100 "$G bench $DEV ${SIZE% --batch-sizes*} --batch-sizes 1 --orders raster:kv_cache=false --tokens-only --warmup 0 --repeats 1 --json $RES/results-nocache.json"
# (d) the papers' FID protocol at 5,000 samples (5 per class): scripts/fid_recipe.sh, when the VAR
# release (GENORDER_VAR_DIR: vae_ch160v4096z32.pth, var_d16.pth) and ADM's reference batch
# (GENORDER_REF_BATCH) are on the machine; the FID needs the fid-helper weights (too big to carry:
# without them the eval step fails, its log says so and the samples.npz stays there). The dry run takes a
# tiny trained run, 2 CPU processes (gloo) and a reference batch of images, scored with the tiny extractor.
if [[ $DRY == 1 ]]; then
  F=$WORK/fid
  part fid-5k 150 "mkdir -p $F && cd $F && $PY -c 'import numpy as np; from genorder.data import render_shapes as r; \
a, l = r(32, 16, seed=1); b, m = r(16, 16, seed=2); np.savez(\"s.npz\", images=a.numpy(), labels=l.numpy(), \
test_images=b.numpy(), test_labels=m.numpy()); np.savez(\"ref.npz\", arr_0=b.numpy().transpose(0, 2, 3, 1))' \
    && $G train-tokenizer --tokenizer msvq-tiny --set tokenizer.channels=3 --dataset npz:s.npz --steps 1 --batch-size 8 --out tok \
    && $G train --order next-scale --depth 1 --dataset npz:s.npz --tokenizer tok/tokenizer --steps 1 --batch-size 4 --device cpu --out run \
    && $PY -m torch.distributed.run --standalone --nproc_per_node 2 -m genorder_cli.main \
       sample --run-dir run --per-class 2 --cfg 1.5 --top-p 0.96 --top-k 900 --device cpu --npz samples.npz --out grid.png \
    && $G eval --samples samples.npz --ref-batch ref.npz --extractor genorder-tiny-random --device cpu --out $RES/fid-5k.json"
elif [[ -n ${GENORDER_VAR_DIR:-} && -n ${GENORDER_REF_BATCH:-} ]]; then
  part fid-5k 240 "PYTHON=$PY bash scripts/fid_recipe.sh '$GENORDER_VAR_DIR' '$GENORDER_REF_BATCH' $WORK/fid 5 \
    && cp $WORK/fid/fid.json $RES/fid-5k.json"
else
  printf '{"part": "fid-5k", "rc": null, "seconds": 0, "limit_s": 0, "timed_out": false, "skipped": "GENORDER_VAR_DIR / GENORDER_REF_BATCH not set"}\n' >>"$WORK/status.jsonl"
fi
if [[ $DRY == 1 ]]; then
  part gpu-tests 60 "$PY -m pytest -q -m gpu tests/test_attention.py -p no:cacheprovider"
else
  part gpu-tests 120 "$PY -m pytest -q -m gpu tests/ -p no:cacheprovider"
fi
pack
echo "done in $(($(date +%s) - T0)) s; results in $OUT"
rm -rf "$WORK"
