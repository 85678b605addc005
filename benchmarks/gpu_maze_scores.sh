#!/usr/bin/env bash
# benchmarks/maze_scores.py on a lent GPU machine: training and evaluation on CUDA, the same code and protocol as on
# CPU. Arguments go to maze_scores.py; the JSON (written after every row) goes to $OUT/maze_scores.json.
# TIME_LIMIT (seconds) stops the run there, keeping the rows finished.
# Example: bash benchmarks/gpu_maze_scores.sh --variant po --algorithms BC,ILQL,MC,%BC --value-steps 6000
set -uo pipefail
source "$(dirname "$0")/gpu_setup.sh"
# The script's folder, not the working directory, heads sys.path, so the checkout's lmrl_lightning/ does not
# shadow the copy on PYTHONPATH.
timeout --kill-after=10 "${TIME_LIMIT:-0}" python3 benchmarks/maze_scores.py --accelerator gpu --results "$OUT/maze_scores.json" "$@" 2>&1 \
  | tr '\r' '\n' | grep -v 'it/s]\|s/it]' | tee "$OUT/maze_scores.log"
