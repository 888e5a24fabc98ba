#!/usr/bin/env bash
# Create .venv with torch + ltvl + test tools. Idempotent: a re-run with nothing changed takes a second.
#
# torch is chosen before anything else can pull it in:
#   * LTVL_TORCH="<pip args>"  — use exactly this (e.g. a CUDA build from your own index);
#   * a base Python that already has a CUDA torch — the venv reuses it (--system-site-packages);
#   * an NVIDIA GPU (nvidia-smi works) — the default torch wheel, which is a CUDA build on Linux;
#   * otherwise the CPU build: torch==2.13.0 (add LTVL_TORCH_INDEX=<url> to take it from a CPU-only index).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$(command -v python3.11 || command -v python3)}"
"$PY" -c 'import sys; assert sys.version_info >= (3, 10), "ltvl needs Python >= 3.10"'
VENV=.venv
stamp_src="$(cat pyproject.toml scripts/constraints.txt scripts/setup.sh | sha256sum | cut -c1-16)"
if [ -f "$VENV/.ltvl-setup" ] && [ "$(cat "$VENV/.ltvl-setup")" = "$stamp_src" ] && "$VENV/bin/python" -c "import ltvl, torch" 2>/dev/null; then
  exit 0
fi
if [ ! -x "$VENV/bin/python" ]; then
  if "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "[setup] reusing the CUDA torch of $PY"
    "$PY" -m venv --system-site-packages "$VENV"
  else
    "$PY" -m venv "$VENV"
  fi
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade pip >/dev/null
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  if [ -n "${LTVL_TORCH:-}" ]; then
    echo "[setup] torch from LTVL_TORCH: $LTVL_TORCH"; "${PIP[@]}" install $LTVL_TORCH
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "[setup] NVIDIA GPU found: installing the CUDA build of torch"; "${PIP[@]}" install "torch>=2.4"
  else
    echo "[setup] no GPU: installing the CPU build torch==2.13.0"
    "${PIP[@]}" install torch==2.13.0 ${LTVL_TORCH_INDEX:+--index-url "$LTVL_TORCH_INDEX"}
  fi
fi
echo "[setup] installing ltvl and its dependencies (pinned by scripts/constraints.txt)"
"${PIP[@]}" install -c scripts/constraints.txt -e ".[test]"
echo "$stamp_src" > "$VENV/.ltvl-setup"
"$VENV/bin/python" -c "import torch, ltvl; print(f'[setup] ok: torch {torch.__version__} (cuda={torch.cuda.is_available()}), ltvl {ltvl.__version__}')"
