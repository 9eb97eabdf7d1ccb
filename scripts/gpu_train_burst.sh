#!/usr/bin/env bash
# One prepared training burst for a GPU machine lent for minutes (README, "Training on a GPU"),
# run there, with .gpu/ carried along, after scripts/gpu_burst_prepare.sh has staged it here:
#   bash scripts/gpu_train_burst.sh [TOTAL_SECONDS]   (default 540: the whole burst ends by then)
# 1. refuse to start without CUDA (a CPU would train 100x less in the same minutes);
# 2. start the config's training shards (480x360 composites on the staged photos: of the
#    staged real cutouts, 70%, and procedural pieces, with the listing styles; keep_synth_*
#    shards procedural only, drawn as the synthetic held-out set is; empty_* shards with no
#    piece), a process each (the config's folders outside runs/gpu are staged ones, used as
#    they are), and meanwhile run the whole chain for three steps on a tiny set, so that a broken
#    step shows in seconds rather than after the synthesis; then, the GPU being idle till the
#    shards are done, scripts/gpu_check.py on the shipped default (at most GPU_CHECK_S, default
#    100, and never past the synthesis; 0 skips it; its end-to-end run is left out, the CPUs
#    being busy);
# 3. fit $CONFIG (default training/configs/unet-b3-real-v13-gpu.yaml) for what is left of
#    TOTAL_SECONDS after the synthesis, less RESERVE_S (default 45) for the export; the shards'
#    seeds start at SEED_BASE (default 3001; v8-gpu's run drew 1001-1014);
# 4. export the best checkpoint as a four-way flip-averaged fp16 version at input 480 and,
#    when $OUT is set, copy there the card, the weights in parts under 16 MiB
#    (`cat weights.safetensors.part-* > weights.safetensors`), the fit log and the GPU check's
#    figures. The held-out evaluation happens back here.
set -euo pipefail
cd "$(dirname "$0")/.."
total_seconds=${1:-540}
reserve_seconds=${RESERVE_S:-45}
per_shard=${PER_SHARD:-300}
val_count=${VAL_COUNT:-200}
gpu_check_seconds=${GPU_CHECK_S:-100}
config=${CONFIG:-training/configs/unet-b3-real-v13-gpu.yaml}
seed_base=${SEED_BASE:-11001}
work=runs/gpu
started=$SECONDS

if ! python3 -c "import segmentation_models_pytorch, pydantic_settings" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/jewelcut-site .gpu/wheels/*.whl
  export PYTHONPATH=/tmp/jewelcut-site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
jewelcut() { python3 -m jewelcut "$@"; }
log() { printf '[burst %4ds] %s\n' $((SECONDS - started)) "$*"; }
[ -n "${ALLOW_CPU:-}" ] || python3 -c "import torch, sys
sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: not training on the CPU')"

synth() {  # FOLDER COUNT SEED
  # keep_synth_* shards are drawn as the synthetic held-out set is (procedural pieces, no
  # listing styles), so that the old kinds keep their weight; empty_* shards hold no piece
  # (what the network must leave empty); the others are 70% real cutouts.
  local style=(--objects .gpu/objects --cutout-share 0.7)
  case $(basename "$1") in
    keep_synth_*) style=(--no-listing-styles) ;;
    empty_*) style=(--no-object --photo-share 0.5) ;;
  esac
  OMP_NUM_THREADS=1 jewelcut train synth "$1" --count "$2" --width 480 --height 360 --seed "$3" \
    --backgrounds .gpu/backgrounds/hands --backgrounds .gpu/backgrounds/surfaces \
    "${style[@]}" --split train >"$work/logs/synth-$(basename "$1").log" 2>&1
}

rm -rf "$work" && mkdir -p "$work/logs"
folders=$(python3 -c "from pathlib import Path; from training.config import load_config as c
run = c(Path('$config')); print(run.name, run.val_data, *run.train_data)")
read -r name val_data shards_line <<<"$folders"
read -ra shards <<<"$shards_line"
version=$work/export/$name
log "synthesising ${#shards[@]} x $per_shard training composites and $val_count for validation"
pids=()
for index in "${!shards[@]}"; do
  case ${shards[$index]} in
    "$work"/*) synth "${shards[$index]}" "$per_shard" $((seed_base + index)) & pids+=($!) ;;
    *) [ -f "${shards[$index]}/manifest.json" ] || { log "not staged: ${shards[$index]}"; exit 1; } ;;
  esac
done
case $val_data in
  "$work"/*) synth "$val_data" "$val_count" 2 & pids+=($!) ;;
  *) [ -f "$val_data/manifest.json" ] || { log "not staged: $val_data"; exit 1; } ;;
esac

log "preflight: the whole chain for three steps on 8 composites"
synth "$work/data/preflight" 8 99
python3 -c "from pathlib import Path; from training.config import load_config, save_config
run = load_config(Path('$config')).model_copy(update=dict(train_data=['$work/data/preflight'],
  val_data='$work/data/preflight', steps=3, time_budget_s=None, val_every=3, batch_size=4))
save_config(run, Path('$work/preflight.yaml'))"
{ jewelcut train fit "$work/preflight" --config "$work/preflight.yaml" &&
  jewelcut train export "$work/preflight/checkpoints/best.pt" --out "$work/preflight/export" \
    --input-size 480 --flips horizontal+vertical; } >"$work/logs/preflight.log" 2>&1 ||
  { tail -n 30 "$work/logs/preflight.log"; kill "${pids[@]}" 2>/dev/null; exit 1; }
check_pid=
if [ "$gpu_check_seconds" -gt 0 ]; then
  log "while the shards are made, the GPU path check on the shipped default (<= ${gpu_check_seconds}s)"
  timeout "$gpu_check_seconds" python3 scripts/gpu_check.py --seconds 2 --e2e-images 0 --worker-images 0 \
    --json "${OUT:-$work}/gpu_check.json" >"${OUT:-$work}/gpu_check.log" 2>&1 &
  check_pid=$!
fi

for pid in "${pids[@]}"; do wait "$pid" || { tail -n 20 "$work"/logs/synth-*.log; exit 1; }; done
if [ -n "$check_pid" ]; then  # training gets the GPU as soon as the shards are there
  kill "$check_pid" 2>/dev/null && log "stopped the GPU check: see gpu_check.log for its figures"
  wait "$check_pid" 2>/dev/null || true
fi
fit_seconds=$((total_seconds - (SECONDS - started) - reserve_seconds))
[ "$fit_seconds" -ge 30 ] || { log "only ${fit_seconds}s left to train: stopping"; exit 1; }
log "fitting for ${fit_seconds}s of training"
jewelcut train fit "$work/run" --config "$config" --time-budget-s "$fit_seconds" \
  >"$work/logs/fit.log" 2>&1 || { tail -n 30 "$work/logs/fit.log"; exit 1; }
tail -n 3 "$work/logs/fit.log"

log "exporting the best checkpoint"
jewelcut train export "$work/run/checkpoints/best.pt" --out "$work/export" --input-size 480 \
  --flips horizontal+vertical \
  --note "GPU burst: scripts/gpu_train_burst.sh $total_seconds, ${fit_seconds}s of training, \
${#shards[@]} shards of $per_shard from seed $seed_base"
if [ -n "${OUT:-}" ]; then
  cp "$version/model.json" "$work/run/log.jsonl" "$OUT/"
  split -b 15M -d "$version/weights.safetensors" "$OUT/weights.safetensors.part-"
  log "copied to \$OUT: $(ls "$OUT" | tr '\n' ' ')"
fi
log "done"
