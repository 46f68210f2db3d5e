#!/usr/bin/env bash
# Where the CPU of the render service and of a front goes at 64 NPCs x 512^2 on the GPU machine:
# one bench row with py-spy sampling both processes (collapsed stacks), then the same row with more
# render threads. Run there from the repository root with .gpu/ carried (tools/gpu_carry.sh, plus
# py-spy's wheel in .gpu/prof/). Results go to $OUT (or ./gpu_out).
#   bash tools/gpu_profile.sh [render threads of the second row, default 2] [extra bench args...]
set -uo pipefail
threads2=${1:-2}; shift || true
out=${OUT:-$PWD/gpu_out}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/whl/*.whl .gpu/prof/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD LPM_NPC_CACHE=$PWD/.gpu/cache LPM_NPC_LOADGEN=$PWD/.gpu/loadgen/run.sh PYTHONUNBUFFERED=1
spy=/tmp/site/bin/py-spy

row() {   # name, bench arguments...
  local name=$1; shift
  echo "== $name: lpm-npc bench $*"
  python3 -m lpm_npc bench --sessions 64 --size 512 --device cuda --workers 8 --pixel-format jpeg \
    --json "$out/$name.json" "$@" > "$out/$name.log" 2>&1
  echo "exit $?"
  grep -E "NPCs|N= 64|render service stopped|Traceback|Error" "$out/$name.log" | cut -c1-420 | tail -12
}

profile() {   # waits for the server, then samples the render service and the busiest front for 15 s
  local log=$1
  for _ in $(seq 240); do grep -q "serving on" "$log" 2>/dev/null && break; sleep 0.5; done
  sleep 12
  local rs front
  rs=$(pgrep -x lpm-npc-render | head -1)
  front=$(pgrep -x lpm-npc-front0 | head -1)
  [ -z "$front" ] && [ -n "$rs" ] && front=$(ps -o ppid= -p "$rs" | tr -d ' ')   # one front: the server itself
  echo "profiling render service $rs and front $front" >> "$out/profile_pids.txt"
  ps -eo pid,ppid,pcpu,rss,comm --sort=-pcpu | head -20 >> "$out/profile_pids.txt"
  [ -n "$rs" ] && $spy record --nonblocking --format raw -r 200 -d 15 -p "$rs" -o "$out/spy_render_service.txt" >/dev/null 2>&1 &
  [ -n "$front" ] && $spy record --nonblocking --format raw -r 200 -d 15 -p "$front" -o "$out/spy_front.txt" >/dev/null 2>&1 &
  top -b -n 1 -d 2 -w 200 | head -30 >> "$out/profile_pids.txt"
  wait
}

profile "$out/profiled.log" &
row profiled --seconds 25 --render-threads 1 "$@"
wait
row threads$threads2 --seconds 8 --render-threads "$threads2" "$@"
