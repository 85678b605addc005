#!/usr/bin/env bash
# The CUDA checks, as run on a lent GPU machine: the GPU-marked tests and the real-model tests, then the
# memory/throughput benchmark on CUDA. Results go to $OUT (default /tmp/gpu_check).
set -uo pipefail
source "$(dirname "$0")/gpu_setup.sh"
# Run from a copy: from the checkout's root, its lmrl_lightning/ (without tasks/, callbacks/) would shadow /tmp/pkg.
rm -rf /tmp/run && mkdir -p /tmp/run && cp -r tests benchmarks pyproject.toml /tmp/run/ && cd /tmp/run
python3 -c "import torch, transformers, peft, bitsandbytes, lightning as L; print('torch', torch.__version__, \
'transformers', transformers.__version__, 'peft', peft.__version__, 'bitsandbytes', bitsandbytes.__version__, \
'lightning', L.__version__, torch.cuda.get_device_name())" | tee "$OUT/versions.txt"
python3 -m pytest -q -p no:cacheprovider -rs tests/test_gpu.py tests/test_hf_models.py 2>&1 | tee "$OUT/gpu_tests.log" | tail -25
[ "${SKIP_BENCHMARK:-0}" = 1 ] || python3 benchmarks/memory_throughput.py --device cuda --steps 10 --warmup 3 \
  --results "$OUT/memory_throughput_cuda.json" 2>&1 | tail -16
