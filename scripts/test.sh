#!/usr/bin/env bash
# The project's test command: provisions the Prefect test server's venv and
# PostgreSQL (idempotent, fast when already there), then runs every test of the
# workspace. Extra arguments go to `cargo test` (e.g. `scripts/test.sh -p prefect-test-harness`).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${repo_root}"

if [[ -n "${CI:-}" ]]; then
    export CARGO_TERM_COLOR=never
    export CARGO_TERM_PROGRESS_WHEN=never
fi

t0="$(date +%s)"
scripts/prefect-server.sh provision --postgres
echo "[test.sh] provisioned in $(( $(date +%s) - t0 )) s" >&2

status=0
cargo test --workspace --no-fail-fast "$@" || status=$?

echo "[test.sh] cargo test exited ${status} after $(( $(date +%s) - t0 )) s" >&2
exit "${status}"
