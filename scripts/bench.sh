#!/usr/bin/env bash
# The scale benchmark (issue 10): our worker, the real Python worker (prefect-kubernetes
# 0.8.0) and the server-bound limit client side by side against one Prefect 3.9.1 server on
# PostgreSQL and one kubesim; writes docs/benchmarks.md. Not a test: nothing is asserted.
#
#   scripts/bench.sh [--scenarios startup,burst,held,churn,latency] [--contenders ours,python,limit]
#                    [--set KEY=N ...] [--smoke]
#
# Builds the release binaries, provisions the Prefect venv and PostgreSQL, and creates the
# benchmark's own venv (bench/.venv, git-ignored) with prefect-kubernetes==0.8.0 the first
# time. See bench/bench.py for every option.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

scripts/prefect-server.sh provision --postgres >&2
cargo build --release -q -p prefect-worker-bin -p kubesim

# The Python contender needs its venv unless --contenders leaves it out.
python_contender=1
if [[ " $* " == *" --contenders"* && " $* " != *python* ]]; then python_contender=0; fi
if [[ "$python_contender" == 1 ]]; then
  venv="$repo/bench/.venv"
  if ! "$venv/bin/python" -c 'from importlib.metadata import version as v; assert v("prefect-kubernetes") == "0.8.0" and v("prefect") == "3.9.1"' 2>/dev/null; then
    echo "[bench] creating $venv with prefect==3.9.1 prefect-kubernetes==0.8.0" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "prefect==3.9.1" "prefect-kubernetes==0.8.0" >&2
  fi
fi

exec "$repo/.venv/bin/python" "$repo/bench/bench.py" "$@"
