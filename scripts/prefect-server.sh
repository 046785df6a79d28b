#!/usr/bin/env bash
# A real Prefect server (pinned to the version the worker replaces) for tests.
#
# Usage:
#   scripts/prefect-server.sh provision [--postgres]
#       Create <repo>/.venv with prefect==$PREFECT_VERSION (idempotent, fast when
#       already there). --postgres also installs Debian's postgresql if missing.
#   scripts/prefect-server.sh start [--postgres] [--port N] [--state-dir DIR] [--watch-pid PID]
#       Start `prefect server start` on 127.0.0.1 (free port unless --port), with a
#       throw-away PREFECT_HOME, wait for GET /api/health, print the API URL on
#       stdout (only that), and write DIR/server.env for the other subcommands.
#       --postgres: private PostgreSQL cluster (initdb into a temp dir) instead of SQLite.
#       --watch-pid: a watchdog runs `stop` once process PID has gone (test harness).
#   scripts/prefect-server.sh stop [--state-dir DIR]
#       Stop the server, then PostgreSQL; remove the temp dirs and the state file.
#   scripts/prefect-server.sh server-stop [--state-dir DIR]
#       Stop only the Prefect server process: port, PREFECT_HOME and database stay.
#   scripts/prefect-server.sh server-kill [--state-dir DIR]
#       Like server-stop, but SIGKILL at once (a crash: no graceful shutdown).
#   scripts/prefect-server.sh server-start [--state-dir DIR]
#       Start the Prefect server again after server-stop (same port, same database).
#   scripts/prefect-server.sh restart [--state-dir DIR]      server-stop + server-start
#   scripts/prefect-server.sh status [--state-dir DIR]       print the state file; exit 1 if not running
#   scripts/prefect-server.sh url [--state-dir DIR]          print the API URL
#
# DIR defaults to $PREFECT_TEST_STATE_DIR or <repo>/.prefect-test (git-ignored).
# Every PREFECT_* variable in the environment reaches the server (e.g.
# PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED=false,
# PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS=5); the script only
# sets defaults for the ones it needs, and always sets PREFECT_HOME, the API
# database URL, host and port. PREFECT_TEST_STARTUP_TIMEOUT (seconds, default 180)
# bounds the wait for /api/health.
set -euo pipefail

PREFECT_VERSION="3.9.1"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
self="${repo_root}/scripts/prefect-server.sh"
venv="${PREFECT_TEST_VENV:-${repo_root}/.venv}"
pg_user="prefecttest"

log() { printf '[prefect-server] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

now_ms() { date +%s%3N; }

# --------------------------------------------------------------------------- provision

venv_prefect_version() {
    [[ -x "${venv}/bin/python" ]] || return 1
    "${venv}/bin/python" - <<'EOF' 2>/dev/null
from importlib.metadata import version
print(version("prefect"))
EOF
}

provision_venv() {
    local t0 have
    t0="$(now_ms)"
    have="$(venv_prefect_version || true)"
    if [[ "${have}" == "${PREFECT_VERSION}" ]]; then
        log "venv ${venv} already has prefect ${have}"
        return 0
    fi
    if [[ ! -x "${venv}/bin/python" ]]; then
        log "creating venv ${venv}"
        python3 -m venv "${venv}"
    fi
    log "installing prefect==${PREFECT_VERSION} into ${venv} (have: ${have:-none})"
    # PREFECT_SERVER_VERBOSE_INSTALL=1 shows pip's progress (the demo sets it).
    local quiet=(--quiet)
    [[ -n "${PREFECT_SERVER_VERBOSE_INSTALL:-}" ]] && quiet=()
    "${venv}/bin/python" -m pip install "${quiet[@]}" --disable-pip-version-check --upgrade pip >&2
    "${venv}/bin/python" -m pip install "${quiet[@]}" --disable-pip-version-check \
        "prefect==${PREFECT_VERSION}" >&2
    have="$(venv_prefect_version || true)"
    [[ "${have}" == "${PREFECT_VERSION}" ]] || die "prefect ${PREFECT_VERSION} not importable after install (got '${have}')"
    log "venv ready in $(( ($(now_ms) - t0) / 1000 )) s"
}

pg_bindir() {
    local d
    if command -v pg_config >/dev/null 2>&1; then
        d="$(pg_config --bindir 2>/dev/null || true)"
        if [[ -n "${d}" && -x "${d}/initdb" && -x "${d}/pg_ctl" ]]; then
            printf '%s\n' "${d}"
            return 0
        fi
    fi
    while IFS= read -r d; do
        if [[ -x "${d}/initdb" && -x "${d}/pg_ctl" ]]; then
            printf '%s\n' "${d}"
            return 0
        fi
    done < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r)
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(command -v initdb)"
        return 0
    fi
    return 1
}

provision_postgres() {
    if pg_bindir >/dev/null; then
        log "postgresql server binaries: $(pg_bindir)"
    else
        [[ "$(id -u)" -eq 0 ]] || die "PostgreSQL server missing and not root: apt-get install postgresql"
        log "installing Debian's postgresql"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2
        apt-get install -y -qq --no-install-recommends postgresql >&2
        pg_bindir >/dev/null || die "no initdb/pg_ctl after installing postgresql"
    fi
    ensure_pg_user
}

ensure_pg_user() {
    [[ "$(id -u)" -eq 0 ]] || return 0
    if ! id -u "${pg_user}" >/dev/null 2>&1; then
        log "creating unprivileged user ${pg_user} (postgres refuses to run as root)"
        useradd --system --no-create-home --shell /usr/sbin/nologin "${pg_user}"
    fi
}

cmd_provision() {
    local postgres=0
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --postgres) postgres=1 ;;
            *) die "provision: unknown argument $1" ;;
        esac
        shift
    done
    # Test binaries may provision concurrently (nextest): one at a time.
    mkdir -p "${venv}"
    exec 9>"${venv}/.provision.lock"
    flock 9
    provision_venv
    if [[ "${postgres}" -eq 1 ]]; then
        provision_postgres
    fi
}

# --------------------------------------------------------------------------- helpers

free_port() {
    python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

state_dir_default() {
    printf '%s\n' "${PREFECT_TEST_STATE_DIR:-${repo_root}/.prefect-test}"
}

# Reads KEY=VALUE lines written by write_state into variables prefixed with S_.
load_state() {
    local file="$1/server.env" key value
    [[ -f "${file}" ]] || return 1
    while IFS='=' read -r key value; do
        [[ -n "${key}" ]] || continue
        printf -v "S_${key}" '%s' "${value}"
    done <"${file}"
}

write_state() {
    local dir="$1" tmp
    shift
    tmp="${dir}/server.env.tmp"
    : >"${tmp}"
    local kv
    for kv in "$@"; do
        printf '%s\n' "${kv}" >>"${tmp}"
    done
    mv -f "${tmp}" "${dir}/server.env"
}

# Rewrites one key of the state file.
set_state_key() {
    local dir="$1" key="$2" value="$3" file tmp
    file="${dir}/server.env"
    tmp="${file}.tmp"
    grep -v "^${key}=" "${file}" >"${tmp}" || true
    printf '%s=%s\n' "${key}" "${value}" >>"${tmp}"
    mv -f "${tmp}" "${file}"
}

alive() { [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null; }

# Kills a process group (the server is started with setsid), TERM then KILL.
kill_group() {
    local pgid="$1" i
    alive "${pgid}" || { kill -KILL -- "-${pgid}" 2>/dev/null || true; return 0; }
    kill -TERM -- "-${pgid}" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        alive "${pgid}" || break
        sleep 0.1
    done
    # Whatever is left of the group (uvicorn children, services).
    kill -KILL -- "-${pgid}" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        alive "${pgid}" || break
        sleep 0.1
    done
}

as_pg_user() {
    if [[ "$(id -u)" -eq 0 ]]; then
        runuser -u "${pg_user}" -- "$@"
    else
        "$@"
    fi
}

health_ok() {
    curl --silent --fail --max-time 2 "$1/health" >/dev/null 2>&1
}

# --------------------------------------------------------------------------- postgres

pg_start_cluster() {
    local pgdir="$1" port="$2" bindir
    bindir="$(pg_bindir)" || die "PostgreSQL server not installed: run '$0 provision --postgres'"
    if [[ ! -f "${pgdir}/data/PG_VERSION" ]]; then
        ensure_pg_user
        mkdir -p "${pgdir}/data" "${pgdir}/run"
        if [[ "$(id -u)" -eq 0 ]]; then
            chown -R "${pg_user}" "${pgdir}"
        fi
        as_pg_user "${bindir}/initdb" -D "${pgdir}/data" -U postgres --auth=trust \
            --encoding=UTF8 --no-locale --no-sync >"${pgdir}/initdb.log" 2>&1 ||
            { cat "${pgdir}/initdb.log" >&2; die "initdb failed"; }
    fi
    # Test-only durability settings: fast, nothing survives a machine crash.
    as_pg_user "${bindir}/pg_ctl" -D "${pgdir}/data" -l "${pgdir}/postgres.log" -w -t 60 \
        -o "-p ${port} -k ${pgdir}/run -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
        start >/dev/null ||
        { tail -n 50 "${pgdir}/postgres.log" >&2 || true; die "postgres did not start"; }
    if ! psql -h "${pgdir}/run" -p "${port}" -U postgres -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = 'prefect'" | grep -q 1; then
        psql -h "${pgdir}/run" -p "${port}" -U postgres -d postgres -qc "CREATE DATABASE prefect" >/dev/null
    fi
}

pg_stop_cluster() {
    local pgdir="$1" bindir
    [[ -f "${pgdir}/data/postmaster.pid" ]] || return 0
    bindir="$(pg_bindir)" || return 0
    as_pg_user "${bindir}/pg_ctl" -D "${pgdir}/data" -m fast -w -t 30 stop >/dev/null 2>&1 ||
        as_pg_user "${bindir}/pg_ctl" -D "${pgdir}/data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
}

# --------------------------------------------------------------------------- server

# Starts the Prefect server described by the state in $1 (S_* loaded), waits for health.
launch_server() {
    local dir="$1" url pid t0 deadline timeout
    url="${S_URL}"
    [[ -x "${venv}/bin/prefect" ]] || die "no ${venv}/bin/prefect: run '$0 provision'"
    t0="$(now_ms)"
    # Defaults that the caller's environment may override.
    export PREFECT_SERVER_ANALYTICS_ENABLED="${PREFECT_SERVER_ANALYTICS_ENABLED:-false}"
    export PREFECT_UI_ENABLED="${PREFECT_UI_ENABLED:-false}"
    export PREFECT_SERVER_UI_ENABLED="${PREFECT_SERVER_UI_ENABLED:-false}"
    export PREFECT_LOGGING_LEVEL="${PREFECT_LOGGING_LEVEL:-WARNING}"
    export PREFECT_LOGGING_SERVER_LEVEL="${PREFECT_LOGGING_SERVER_LEVEL:-WARNING}"
    export PREFECT_SERVER_LOGGING_LEVEL="${PREFECT_SERVER_LOGGING_LEVEL:-WARNING}"
    export PREFECT_CLI_COLORS=false
    export PREFECT_CLI_PROMPT=false
    export PREFECT_TELEMETRY_ENABLED=false
    export DO_NOT_TRACK=1
    # Always ours.
    export PREFECT_HOME="${S_HOME}"
    export PREFECT_PROFILES_PATH="${S_HOME}/profiles.toml"
    export PREFECT_API_DATABASE_CONNECTION_URL="${S_DB_URL}"
    export PREFECT_SERVER_DATABASE_CONNECTION_URL="${S_DB_URL}"
    export PREFECT_SERVER_API_HOST=127.0.0.1
    export PREFECT_SERVER_API_PORT="${S_PORT}"
    unset PREFECT_API_URL PREFECT_API_KEY PREFECT_PROFILE
    setsid "${venv}/bin/prefect" server start --host 127.0.0.1 --port "${S_PORT}" --no-ui \
        </dev/null >>"${S_HOME}/server.log" 2>&1 &
    pid=$!
    set_state_key "${dir}" PID "${pid}"
    timeout="${PREFECT_TEST_STARTUP_TIMEOUT:-180}"
    deadline=$(( $(now_ms) + timeout * 1000 ))
    until health_ok "${url}"; do
        if ! alive "${pid}"; then
            tail -n 60 "${S_HOME}/server.log" >&2 || true
            die "prefect server exited during startup (log: ${S_HOME}/server.log)"
        fi
        if (( $(now_ms) > deadline )); then
            tail -n 60 "${S_HOME}/server.log" >&2 || true
            kill_group "${pid}"
            die "prefect server not healthy after ${timeout} s"
        fi
        sleep 0.2
    done
    log "server pid ${pid} healthy at ${url} after $(( $(now_ms) - t0 )) ms"
}

watchdog_loop() {
    local watch_pid="$1" dir="$2"
    while alive "${watch_pid}" && [[ -f "${dir}/server.env" ]]; do
        sleep 0.5
    done
    if [[ -f "${dir}/server.env" ]]; then
        "${self}" stop --state-dir "${dir}" >/dev/null 2>&1 || true
    fi
}

cmd_start() {
    local postgres=0 port="" dir watch_pid="" tmp home pgdir="" pgport="" db_url t0
    dir="$(state_dir_default)"
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --postgres) postgres=1 ;;
            --port) port="$2"; shift ;;
            --state-dir) dir="$2"; shift ;;
            --watch-pid) watch_pid="$2"; shift ;;
            *) die "start: unknown argument $1" ;;
        esac
        shift
    done
    t0="$(now_ms)"
    mkdir -p "${dir}"
    dir="$(cd "${dir}" && pwd)"
    if load_state "${dir}"; then
        if alive "${S_PID:-}" || { [[ -n "${S_PG_DIR:-}" ]] && [[ -f "${S_PG_DIR}/data/postmaster.pid" ]]; }; then
            die "a server from ${dir}/server.env is still running (${S_URL:-?}); run '$0 stop --state-dir ${dir}' first"
        fi
        log "removing stale state ${dir}/server.env"
        cmd_stop --state-dir "${dir}"
        mkdir -p "${dir}"
    fi
    [[ -n "${port}" ]] || port="$(free_port)"
    tmp="$(mktemp -d "${TMPDIR:-/tmp}/prefect-test.XXXXXXXX")"
    chmod 0711 "${tmp}"
    home="${tmp}/home"
    mkdir -p "${home}"
    db_url="sqlite+aiosqlite:///${home}/prefect.db"
    if [[ "${postgres}" -eq 1 ]]; then
        pgdir="${tmp}/pg"
        pgport="$(free_port)"
        db_url="postgresql+asyncpg://postgres@127.0.0.1:${pgport}/prefect"
    fi
    write_state "${dir}" \
        "URL=http://127.0.0.1:${port}/api" "PORT=${port}" "PID=" "TMP=${tmp}" "HOME=${home}" \
        "PG_DIR=${pgdir}" "PG_PORT=${pgport}" "DB_URL=${db_url}" "WATCHDOG=" \
        "BACKEND=$([[ "${postgres}" -eq 1 ]] && echo postgres || echo sqlite)"
    if [[ -n "${watch_pid}" ]]; then
        setsid "${self}" __watchdog "${watch_pid}" "${dir}" </dev/null >/dev/null 2>&1 &
        set_state_key "${dir}" WATCHDOG "$!"
    fi
    if [[ "${postgres}" -eq 1 ]]; then
        pg_start_cluster "${pgdir}" "${pgport}"
        log "postgres on 127.0.0.1:${pgport} (dir ${pgdir})"
    fi
    load_state "${dir}"
    if ! launch_server "${dir}"; then
        cmd_stop --state-dir "${dir}"
        exit 1
    fi
    log "started in $(( $(now_ms) - t0 )) ms; state in ${dir}/server.env"
    printf '%s\n' "${S_URL}"
}

cmd_server_stop() {
    local dir
    dir="$(parse_dir_only "$@")"
    load_state "${dir}" || die "no state in ${dir}"
    if [[ -n "${S_PID:-}" ]]; then
        kill_group "${S_PID}"
    fi
    set_state_key "${dir}" PID ""
}

cmd_server_kill() {
    local dir i
    dir="$(parse_dir_only "$@")"
    load_state "${dir}" || die "no state in ${dir}"
    if [[ -n "${S_PID:-}" ]]; then
        kill -KILL -- "-${S_PID}" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
            alive "${S_PID}" || break
            sleep 0.1
        done
    fi
    set_state_key "${dir}" PID ""
}

cmd_server_start() {
    local dir
    dir="$(parse_dir_only "$@")"
    load_state "${dir}" || die "no state in ${dir}"
    if alive "${S_PID:-}"; then
        die "server already running (pid ${S_PID})"
    fi
    launch_server "${dir}"
    printf '%s\n' "${S_URL}"
}

cmd_stop() {
    local dir
    dir="$(parse_dir_only "$@")"
    if ! load_state "${dir}"; then
        log "nothing to stop (no ${dir}/server.env)"
        return 0
    fi
    if [[ -n "${S_PID:-}" ]]; then
        kill_group "${S_PID}"
    fi
    if [[ -n "${S_PG_DIR:-}" ]]; then
        pg_stop_cluster "${S_PG_DIR}"
    fi
    if [[ -n "${S_TMP:-}" && -d "${S_TMP}" && "${S_TMP}" == */prefect-test.* ]]; then
        rm -rf "${S_TMP}"
    fi
    rm -f "${dir}/server.env"
    # The watchdog sees the state file gone and exits by itself.
    rmdir "${dir}" 2>/dev/null || true
    unset S_PID S_PG_DIR S_TMP
}

cmd_status() {
    local dir
    dir="$(parse_dir_only "$@")"
    load_state "${dir}" || { log "not running"; return 1; }
    cat "${dir}/server.env"
    alive "${S_PID:-}" && health_ok "${S_URL}"
}

cmd_url() {
    local dir
    dir="$(parse_dir_only "$@")"
    load_state "${dir}" || die "no state in ${dir}"
    printf '%s\n' "${S_URL}"
}

parse_dir_only() {
    local dir
    dir="$(state_dir_default)"
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --state-dir) dir="$2"; shift ;;
            *) die "unknown argument $1" ;;
        esac
        shift
    done
    printf '%s\n' "${dir}"
}

main() {
    local cmd="${1:-}"
    [[ $# -gt 0 ]] && shift
    case "${cmd}" in
        provision) cmd_provision "$@" ;;
        start) cmd_start "$@" ;;
        stop) cmd_stop "$@" ;;
        server-stop) cmd_server_stop "$@" ;;
        server-kill) cmd_server_kill "$@" ;;
        server-start) cmd_server_start "$@" ;;
        restart) cmd_server_stop "$@"; cmd_server_start "$@" ;;
        status) cmd_status "$@" ;;
        url) cmd_url "$@" ;;
        __watchdog) watchdog_loop "$@" ;;
        *)
            sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' >&2
            exit 2
            ;;
    esac
}

main "$@"
