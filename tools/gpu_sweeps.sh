#!/usr/bin/env bash
# The H100 measurements docs/GPU.md "First thing" asks for, one phase per device command (each well
# inside the 10-minute limit). Run on the GPU machine from the repository root, with .gpu/ carried
# (made here by tools/gpu_carry.sh). Results (JSON, PNG where made, logs) go to $OUT (or ./gpu_out).
#   bash tools/gpu_sweeps.sh baseline   # 8,32,64 NPCs at 512^2, one front  (compare docs/bench_scaling_h100_jpeg.json)
#   bash tools/gpu_sweeps.sh fronts     # 32,64 NPCs at 512^2 with --fronts 4, then --fronts 2
#   bash tools/gpu_sweeps.sh fronts4    # 32,64 NPCs at 512^2 with --fronts 4 only
#   bash tools/gpu_sweeps.sh all        # both (about 4 minutes on the H100 machine)
# SECONDS_PER_ROW=10 measures each row longer (default 5; the first quarter, at most 2 s, is not counted).
set -uo pipefail
phase=${1:-all}
out=${OUT:-$PWD/gpu_out}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD LPM_NPC_CACHE=$PWD/.gpu/cache LPM_NPC_LOADGEN=$PWD/.gpu/loadgen/run.sh PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader || true

sweep() {   # name, extra bench arguments...
  local name=$1; shift
  echo "== $name: lpm-npc bench $*"
  python3 -m lpm_npc bench --size 512 --seconds "${SECONDS_PER_ROW:-5}" --device cuda --workers 8 --render-threads 1 \
    --pixel-format jpeg --json "$out/h100_$name.json" "$@" > "$out/h100_$name.log" 2>&1
  echo "exit $?"
  # the table and the lines that say where the time went
  grep -E "NPCs|received fps|latency|CPU ms per frame|busiest|share of bare|render service stopped|failed to start|is hung|Traceback|Error" \
    "$out/h100_$name.log" | cut -c1-420 | tail -40
}

case $phase in
  baseline) sweep after_fix --sessions 8,32,64 ;;
  fronts4) sweep fronts4 --sessions 32,64 --fronts 4 ;;
  fronts) sweep fronts4 --sessions 32,64 --fronts 4; sweep fronts2 --sessions 32,64 --fronts 2 ;;
  all) sweep after_fix --sessions 8,32,64; sweep fronts4 --sessions 32,64 --fronts 4
       sweep fronts2 --sessions 32,64 --fronts 2 ;;
  *) echo "usage: $0 baseline|fronts|fronts4|all" >&2; exit 2 ;;
esac
