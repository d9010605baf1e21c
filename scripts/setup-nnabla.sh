#!/usr/bin/env bash
# Create the nnabla oracle venv for the NNC tests (tests/test_nnc.py, marker "nnabla").
#
# nnabla 1.39.0 ships wheels for CPython 3.6-3.10 only and pins numpy~=1.26 and protobuf~=3.20,
# so it cannot share the main venv (Python 3.11, TensorFlow 2.21, protobuf 7). The tests never
# import nnabla: they run tests/nnabla_oracle.py with this venv's python in a subprocess.
#
# Usage:
#   scripts/setup-nnabla.sh                 # venv at ./.venv-nnabla
#   NNABLA_VENV=/path scripts/setup-nnabla.sh
#   PYTHON310=/usr/bin/python3.10 scripts/setup-nnabla.sh
# Then: export NNABLA_PYTHON="$(scripts/setup-nnabla.sh | tail -n 1)"
set -euo pipefail

venv="${NNABLA_VENV:-.venv-nnabla}"
python="${PYTHON310:-}"
if [ -z "$python" ]; then
    for candidate in python3.10 /root/.pyenv/versions/3.10.13/bin/python "$HOME/.pyenv/versions/3.10.13/bin/python"; do
        if command -v "$candidate" >/dev/null 2>&1 \
            && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' 2>/dev/null; then
            python="$candidate"
            break
        fi
    done
fi
if [ -z "$python" ]; then
    echo "setup-nnabla.sh: no Python 3.10 found (nnabla 1.39.0 has wheels for 3.6-3.10 only). Set PYTHON310=/path/to/python3.10" >&2
    exit 1
fi

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv" >&2
fi
# Quiet pip; its progress goes to stderr so the last stdout line stays the python path.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "nnabla==1.39.0" >&2
"$venv/bin/python" -c 'import nnabla, numpy, google.protobuf as pb; print(f"nnabla {nnabla.__version__}, numpy {numpy.__version__}, protobuf {pb.__version__}")' >&2
cd "$(dirname "$venv/bin/python")" && echo "$(pwd)/python"
