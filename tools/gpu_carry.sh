#!/usr/bin/env bash
# Prepare .gpu/ (git-ignored): what a bare GPU machine without package registries needs to run lpm-npc's
# GPU checks and benchmark next to its own torch/torchvision/numpy 2 (see docs/GPU.md):
#   .gpu/whl/      wheels it lacks (protobuf 4.25 for the generated gRPC code, health/reflection, Silero VAD,
#                  eSpeak NG for the benchmark's speech), for CPython 3.12
#   .gpu/loadgen/  the native benchmark client built here, its shared libraries, and run.sh
#   .gpu/prof/     py-spy's wheel (tools/gpu_profile.sh)
#   .gpu/cache/    the built-in character's rig, as "default" and as the bench registers it (no face landmarker there)
# Usage: bash tools/gpu_carry.sh   (from the repository root, with the dev venv's python on PATH or $PY)
set -euo pipefail
PY=${PY:-python}
cd "$(dirname "$0")/.."
exclude=$(git rev-parse --git-path info/exclude); mkdir -p "$(dirname "$exclude")"
grep -qx "/.gpu/" "$exclude" 2>/dev/null || echo "/.gpu/" >> "$exclude"
rm -rf .gpu && mkdir -p .gpu/whl .gpu/loadgen/lib .gpu/cache
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 --platform any -d .gpu/whl \
  protobuf==4.25.9 grpcio-health-checking==1.62.3 grpcio-reflection==1.62.3 silero-vad==6.2.3 espeakng-loader==0.2.4
mkdir -p .gpu/prof   # py-spy, for tools/gpu_profile.sh
$PY -m pip download -q --no-deps --only-binary=:all: --platform manylinux_2_17_x86_64 --platform manylinux1_x86_64 \
  --platform manylinux_2_5_x86_64 -d .gpu/prof py-spy==0.4.3
exe=$($PY -c "from lpm_npc.loadgen import build_loadgen; print(build_loadgen())")
cp "$exe" .gpu/loadgen/
ldd "$exe" | awk '/=>/{print $3}' | grep -vE "libc\.so|libm\.so|ld-linux|libstdc\+\+|libgcc_s|libpthread|libdl|librt" \
  | xargs -I{} cp -L {} .gpu/loadgen/lib/
printf '#!/bin/sh\nd=$(cd "$(dirname "$0")" && pwd)\nLD_LIBRARY_PATH="$d/lib" exec "$d/lpmnpc_loadgen" "$@"\n' > .gpu/loadgen/run.sh
chmod +x .gpu/loadgen/run.sh
LPM_NPC_CACHE=$PWD/.gpu/cache $PY -c "
from lpm_npc.character.store import CharacterStore
from lpm_npc.config import default_cache_dir
from lpm_npc.character.default import default_portrait_png
s = CharacterStore(default_cache_dir()); s.ensure_default()
s.register(default_portrait_png())  # the bench registers the portrait as a client would
s.close()"
du -sh .gpu
