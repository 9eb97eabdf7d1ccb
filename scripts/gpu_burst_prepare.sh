#!/usr/bin/env bash
# Stage here what scripts/gpu_train_burst.sh needs on a bare GPU machine that reaches no package
# registry and sees only this checkout (README, "Training on a GPU"): wheels, for its Python
# 3.12, of the packages its image lacks (and of typer, whose version there is unknown), at the
# versions installed here, and the real training data as small copies of the TRAIN side of the
# train/dev split (background photos <= 320 px JPEG, real RGBA cutouts <= 320 px WebP with
# alpha, the keyed product photos as they are), plus the real dev-val composites the run picks
# its best checkpoint on (the only dev objects that travel; never trained on). All of it goes to .gpu/ (ignored by git); the
# checkout and .gpu/ together must stay under the 64 MiB a lent machine takes.
#   scripts/gpu_burst_prepare.sh DATA KEYED DEVVAL
#   e.g. scripts/gpu_burst_prepare.sh ../shared/data runs/products runs/data/real_devval
# (DATA holds backgrounds/ and objects/; KEYED is `train key-products` output; DEVVAL a
# `train synth --split dev` set.)
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:?usage: $0 DATA KEYED DEVVAL}
keyed=${2:?usage: $0 DATA KEYED DEVVAL}
devval=${3:?usage: $0 DATA KEYED DEVVAL}
carried=(segmentation_models_pytorch pydantic pydantic_core pydantic-settings typing-inspection
  typing_extensions python-dotenv annotated-types typer shellingham)

pins=()
for name in "${carried[@]}"; do
  pins+=("$name==$(python -c "import importlib.metadata as m; print(m.version('$name'))")")
done
rm -rf .gpu && mkdir -p .gpu/wheels
python -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .gpu/wheels "${pins[@]}"
python -m training.stage "$data" "$keyed" "$devval" .gpu
cp "$data/backgrounds/NOTICE.md" .gpu/backgrounds/
cp "$data/objects/NOTICE.md" .gpu/objects/
size_mb=$(( $(du -sk .gpu | cut -f1) / 1024 ))
tracked_mb=$(( $(git ls-files -z | xargs -0 du -ck | tail -1 | cut -f1) / 1024 ))
echo "staged in .gpu/: $(ls .gpu/wheels | wc -l) wheels, ${size_mb} MiB (+ ${tracked_mb} MiB checkout)"
[ $((size_mb + tracked_mb)) -lt 62 ] || { echo "over the 64 MiB a GPU machine takes" >&2; exit 1; }
