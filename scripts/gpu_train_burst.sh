#!/usr/bin/env bash
# One prepared training burst for a GPU machine lent for minutes (README, "Training on a GPU"),
# run there, with .gpu/ carried along, after scripts/gpu_burst_prepare.sh has staged it here:
#   bash scripts/gpu_train_burst.sh [FIT_SECONDS]   (default 240; synthesis and scoring add ~4 min)
# 1. synthesise the config's training shards (480x360 composites) and its validation set, a
#    process each;
# 2. fit training/configs/unet-b3-synth-v8-gpu.yaml for FIT_SECONDS of training;
# 3. export the best checkpoint as a flip-averaged fp16 version at input 480 and score it and
#    the shipped default on the validation set;
# 4. when $OUT is set, copy there what the held-out evaluation back here needs: the card, the
#    weights in parts under 16 MiB (`cat weights.safetensors.part-* > weights.safetensors`),
#    the fit log and both validation reports.
set -euo pipefail
cd "$(dirname "$0")/.."
fit_seconds=${1:-240}
per_shard=${PER_SHARD:-400}
val_count=${VAL_COUNT:-200}
config=training/configs/unet-b3-synth-v8-gpu.yaml
work=runs/gpu
version=$work/export/unet-b3-synth-v8-gpu
started=$SECONDS

if ! python3 -c "import segmentation_models_pytorch, pydantic_settings" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/jewelcut-site .gpu/wheels/*.whl
  export PYTHONPATH=/tmp/jewelcut-site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
jewelcut() { python3 -m jewelcut "$@"; }
log() { printf '[burst %4ds] %s\n' $((SECONDS - started)) "$*"; }

synth() {  # FOLDER COUNT SEED
  OMP_NUM_THREADS=1 jewelcut train synth "$1" --count "$2" --width 480 --height 360 --seed "$3" \
    --backgrounds .gpu/backgrounds/hands --backgrounds .gpu/backgrounds/surfaces \
    >"$work/logs/synth-$(basename "$1").log" 2>&1
}

folders=$(python3 -c "from pathlib import Path; from training.config import load_config as c
run = c(Path('$config')); print(run.val_data, *run.train_data)")
read -r val_data shards_line <<<"$folders"
read -ra shards <<<"$shards_line"
rm -rf "$work" && mkdir -p "$work/logs"
log "synthesising ${#shards[@]} x $per_shard training composites and $val_count for validation"
pids=()
for index in "${!shards[@]}"; do
  synth "${shards[$index]}" "$per_shard" $((1001 + index)) &
  pids+=($!)
done
synth "$val_data" "$val_count" 2 &
pids+=($!)
for pid in "${pids[@]}"; do wait "$pid" || { tail -n 20 "$work"/logs/synth-*.log; exit 1; }; done

log "fitting for ${fit_seconds}s of training"
jewelcut train fit "$work/run" --config "$config" --time-budget-s "$fit_seconds" \
  >"$work/logs/fit.log" 2>&1 || { tail -n 30 "$work/logs/fit.log"; exit 1; }
tail -n 3 "$work/logs/fit.log"

log "exporting and scoring on the validation set"
jewelcut train export "$work/run/checkpoints/best.pt" --out "$work/export" --input-size 480 \
  --flip-average --note "GPU burst: scripts/gpu_train_burst.sh $fit_seconds, $per_shard per shard"
shipped=$(python3 -c "from jewelcut.settings import DEFAULT_MODELS_DIR as d
from worker.model import default_model_dir; print(default_model_dir(d))")
for model in "$version" "$shipped"; do
  jewelcut train evaluate "$model" --data "$val_data" --no-sheet \
    --out "$work/eval/$(basename "$model").json"
done

if [ -n "${OUT:-}" ]; then
  cp "$version/model.json" "$work/run/log.jsonl" "$work/eval/"*.json "$OUT/"
  split -b 15M -d "$version/weights.safetensors" "$OUT/weights.safetensors.part-"
  log "copied to \$OUT: $(ls "$OUT" | tr '\n' ' ')"
fi
log "done"
