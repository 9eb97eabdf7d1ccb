#!/usr/bin/env bash
# Stage here what scripts/gpu_train_burst.sh needs on a bare GPU machine that reaches no package
# registry and sees only this checkout (README, "Training on a GPU"): wheels, for its Python
# 3.12, of the packages its image lacks (and of typer, whose version there is unknown), at the
# versions installed here, and the background photos. All of it goes to .gpu/ (ignored by git;
# about 36 MB).
#   scripts/gpu_burst_prepare.sh ../shared/data/backgrounds
set -euo pipefail
cd "$(dirname "$0")/.."
backgrounds=${1:?usage: $0 BACKGROUNDS_DIR (holding hands/ and surfaces/)}
carried=(segmentation_models_pytorch pydantic pydantic_core pydantic-settings typing-inspection
  typing_extensions python-dotenv annotated-types typer shellingham)

pins=()
for name in "${carried[@]}"; do
  pins+=("$name==$(python -c "import importlib.metadata as m; print(m.version('$name'))")")
done
rm -rf .gpu && mkdir -p .gpu/wheels .gpu/backgrounds
python -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .gpu/wheels "${pins[@]}"
cp -r "$backgrounds/hands" "$backgrounds/surfaces" .gpu/backgrounds/
wheels=$(ls .gpu/wheels | wc -l)
photos=$(find .gpu/backgrounds -type f | wc -l)
echo "staged in .gpu/: $wheels wheels, $photos photos, $(du -sh .gpu | cut -f1)"
