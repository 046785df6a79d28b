#!/usr/bin/env bash
# The chaos suite at full size (issue 11; docs/reliability.md): the scenarios of
# tests/e2e/tests/chaos.rs against the real Prefect server on PostgreSQL and kubesim,
# scaled up through their environment variables, each result written as a table row.
#
# Usage:
#   scripts/chaos.sh [SCENARIO...]
#     replicas           3 workers, one name; 2 SIGKILLed mid-burst   (CHAOS_REPLICA_RUNS=500)
#     kubernetes-faults  5xx, 429, watch cuts, 410s, API paused 30 s (CHAOS_K8S_RUNS=200)
#     kill-steps         SIGKILL at each submission step, same and new name
#     malformed          70+ malformed inputs
#     secrets            API key and auth string never leak
#     server-restart     Prefect server SIGKILLed mid-burst          (CHAOS_RESTART_RUNS=200)
#     soak               one hour with a fault every 3 minutes         (CHAOS_SOAK_MINUTES=60)
#   Default: every scenario but soak.
#
# Output: $CHAOS_OUT (default target/chaos/<timestamp>): one log per scenario,
# results.jsonl (the CHAOS-RESULT lines), table.md (the rows for docs/reliability.md),
# logs/ (each worker's output, kubeconfigs, soak.csv). Exit status: 0 when every scenario
# passed.
set -euo pipefail
cd "$(dirname "$0")/.."

out="${CHAOS_OUT:-target/chaos/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "${out}"
export CHAOS_LOG_DIR="${out}/logs"
: "${CHAOS_REPLICA_RUNS:=500}" "${CHAOS_REPLICA_KILLS:=2}" "${CHAOS_K8S_RUNS:=200}"
: "${CHAOS_RESTART_RUNS:=200}" "${CHAOS_SOAK_MINUTES:=60}"
export CHAOS_REPLICA_RUNS CHAOS_REPLICA_KILLS CHAOS_K8S_RUNS CHAOS_RESTART_RUNS CHAOS_SOAK_MINUTES

scenarios=("$@")
if [[ ${#scenarios[@]} -eq 0 ]]; then
    scenarios=(replicas kubernetes-faults kill-steps malformed secrets server-restart)
fi

echo "[chaos] building the worker and the tests" >&2
cargo build -p prefect-worker-bin >&2
cargo test -p e2e --test chaos --no-run >&2

failed=0
for s in "${scenarios[@]}"; do
    ignored=""
    case "${s}" in
        replicas) test=replicas_with_kills_run_every_run_once;
            cmd="CHAOS_REPLICA_RUNS=${CHAOS_REPLICA_RUNS} CHAOS_REPLICA_KILLS=${CHAOS_REPLICA_KILLS} scripts/chaos.sh replicas" ;;
        kubernetes-faults) test=kubernetes_api_faults_change_no_outcome;
            cmd="CHAOS_K8S_RUNS=${CHAOS_K8S_RUNS} scripts/chaos.sh kubernetes-faults" ;;
        kill-steps) test=a_worker_killed_at_each_step_loses_nothing; cmd="scripts/chaos.sh kill-steps" ;;
        malformed) test=malformed_input_fails_only_its_own_run_and_says_why; cmd="scripts/chaos.sh malformed" ;;
        secrets) test=secrets_appear_nowhere; cmd="scripts/chaos.sh secrets" ;;
        server-restart) test=a_prefect_server_crash_mid_burst_loses_nothing; ignored="--ignored";
            cmd="CHAOS_RESTART_RUNS=${CHAOS_RESTART_RUNS} scripts/chaos.sh server-restart" ;;
        soak) test=soak_for_an_hour_with_faults; ignored="--ignored";
            cmd="CHAOS_SOAK_MINUTES=${CHAOS_SOAK_MINUTES} scripts/chaos.sh soak" ;;
        *) echo "[chaos] unknown scenario ${s}" >&2; exit 2 ;;
    esac
    echo "[chaos] ${s} ($(date +%T))" >&2
    start=$(date +%s)
    status=passed
    # shellcheck disable=SC2086 # ${ignored} is empty or one flag
    if ! cargo test -p e2e --test chaos "${test}" -- --exact --nocapture ${ignored} \
        >"${out}/${s}.log" 2>&1; then
        status=FAILED
        failed=1
    fi
    secs=$(( $(date +%s) - start ))
    echo "[chaos] ${s}: ${status} in ${secs} s (log: ${out}/${s}.log)" >&2
    grep '^CHAOS-RESULT ' "${out}/${s}.log" | sed 's/^CHAOS-RESULT //' | python3 -c '
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    r.update(command=sys.argv[1], status=sys.argv[2], wall_seconds=int(sys.argv[3]))
    print(json.dumps(r))
' "${cmd}" "${status}" "${secs}" >>"${out}/results.jsonl" || true
    grep '^CHAOS-SOAK ' "${out}/${s}.log" >>"${out}/soak.txt" || true
done

python3 - "${out}/results.jsonl" >"${out}/table.md" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()] if len(sys.argv) > 1 else []
print("| scenario | injected | runs | outcomes right | duplicates | stuck | worker restarts | settle (s) | result | command |")
print("|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r['scenario']} | {r['injected']} | {r['runs']} | {r['right']} | {r['duplicates']} "
          f"| {r['stuck']} | {r['worker_restarts']} | {r['settle_seconds']:.0f} | {r['status']} | `{r['command']}` |")
EOF
cat "${out}/table.md"
[[ -f "${out}/soak.txt" ]] && cat "${out}/soak.txt"
exit "${failed}"
