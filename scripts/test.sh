#!/usr/bin/env bash
# The project's test command: provisions the Prefect test server's venv and
# PostgreSQL (idempotent, fast when already there), then runs every test of the
# workspace (`cargo test --workspace --no-fail-fast`). Arguments replace
# `--workspace`: `scripts/test.sh -p prefect-test-harness`,
# `scripts/test.sh --workspace -- --nocapture`.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${repo_root}"

if [[ -n "${CI:-}" ]]; then
    export CARGO_TERM_COLOR=never
    export CARGO_TERM_PROGRESS_WHEN=never
fi

t0="$(date +%s)"
scripts/prefect-server.sh provision --postgres
# hadolint and kubernetes-validate for the deploy tests (a git-ignored venv, once).
scripts/tools.sh provision
echo "[test.sh] provisioned in $(( $(date +%s) - t0 )) s" >&2

if [[ $# -eq 0 ]]; then
    set -- --workspace
fi
status=0
cargo test --no-fail-fast "$@" || status=$?

# Test binaries leave their shared servers to the script's watchdog, which
# stops them a moment after each binary exits: wait for that (bounded).
for ((i = 0; i < 300; i++)); do
    pgrep -f "${repo_root}/scripts/prefect-server.sh __watchdog" >/dev/null || break
    sleep 0.1
done

echo "[test.sh] cargo test exited ${status} after $(( $(date +%s) - t0 )) s" >&2
exit "${status}"
