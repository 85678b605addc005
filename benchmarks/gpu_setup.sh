# Sourced by the GPU scripts on a lent GPU machine (no network there): install carried wheels (.whl/, e.g.
# bitsandbytes and peft, when the machine lacks them) and put a copy of the package on PYTHONPATH.
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
rm -rf /tmp/pkg && mkdir -p /tmp/pkg && cp -r lmrl_lightning /tmp/pkg/ \
  && cp -r tasks /tmp/pkg/lmrl_lightning/tasks && cp -r callbacks /tmp/pkg/lmrl_lightning/callbacks
export PYTHONPATH=/tmp/site:/tmp/pkg
