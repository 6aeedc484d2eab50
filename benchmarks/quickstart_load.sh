#!/bin/bash
# The quick-start example end to end, with N CPU-bound processes beside it, on metarep's default,
# its one-thread path and the NumPy backend (wall seconds, start-up included).
#
#     benchmarks/quickstart_load.sh                 # extra processes 0, 1, 2; two runs each
#     LOADS="2" REPS=3 benchmarks/quickstart_load.sh
#     OTHER=/path/to/other/checkout benchmarks/quickstart_load.sh   # also time another version
#                                                   # (its src/ and examples/; NUMBA_NUM_THREADS=1
#                                                   # is its one-thread path if it predates METAREP_THREADS)
cd "$(dirname "$0")/.." || exit 1
HERE=$PWD
OUT=$(mktemp -d)
run() {  # label, checkout, env...
  local label=$1 src=$2; shift 2
  local t0 t1
  t0=$(date +%s.%N)
  env PYTHONPATH="$src/src" "$@" metarep run "$src/examples/fo_anil.toml" --quiet --force --out "$OUT/run" >/dev/null 2>&1
  t1=$(date +%s.%N)
  printf "%-16s %6.2f s\n" "$label" "$(echo "$t1 - $t0" | bc)"
}
for load in ${LOADS:-0 1 2}; do
  pids=()
  for _ in $(seq 1 "$load"); do python3 -c "while True: pass" & pids+=($!); done
  sleep 0.5
  for rep in $(seq 1 "${REPS:-2}"); do
    echo "# $load extra processes, run $rep, load average $(cut -d' ' -f1-3 /proc/loadavg)"
    run default "$HERE"
    run one-thread "$HERE" METAREP_THREADS=1
    run numpy "$HERE" METAREP_KERNEL=numpy
    if [ -n "$OTHER" ]; then
      run other-default "$OTHER"
      run other-1thread "$OTHER" NUMBA_NUM_THREADS=1 METAREP_THREADS=1
      run other-numpy "$OTHER" METAREP_KERNEL=numpy
    fi
  done
  for p in "${pids[@]}"; do kill "$p"; done
done
rm -rf "$OUT"
