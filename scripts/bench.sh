#!/usr/bin/env bash
# Benchmarks of the worker process (not tests: numbers are printed, nothing is asserted).
#   - start → first poll: from exec to the first POST .../get_scheduled_flow_runs
#   - idle RSS after the worker has been polling for a few seconds
# Starts a throw-away Prefect server and the simulated cluster; stops both.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
work="$(mktemp -d)"
state="$work/state"
pids=()
cleanup() {
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  scripts/prefect-server.sh stop --state-dir "$state" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

cargo build --release -q -p prefect-worker-bin -p kubesim
scripts/prefect-server.sh provision >/dev/null
api_url="$(scripts/prefect-server.sh start --state-dir "$state" 2>/dev/null)"
target/release/kubesim --port 0 --kubeconfig-out "$work/kubeconfig" >"$work/kubesim.log" 2>&1 &
pids+=("$!")
for _ in $(seq 1 100); do [ -s "$work/kubeconfig" ] && break; sleep 0.1; done
# The pool exists already, as it does for a restarted worker.
curl -fsS -X POST "$api_url/work_pools/" -H 'content-type: application/json' -d '{"name": "bench", "type": "kubernetes"}' >/dev/null

for i in 1 2 3 4 5; do
  log="$work/worker-$i.log"
  start_ns="$(date +%s%N)"
  RUST_LOG=prefect_worker_core=debug PREFECT_API_URL="$api_url" KUBECONFIG="$work/kubeconfig" \
    PREFECT_PROFILES_PATH="$work/none.toml" \
    target/release/prefect-worker --log-format json start --pool bench --name "bench-$i" >/dev/null 2>"$log" &
  pid=$!
  for _ in $(seq 1 500); do grep -q 'get_scheduled_flow_runs' "$log" && break; sleep 0.01; done
  first="$("$repo/.venv/bin/python" - "$log" <<'PY'
import json, sys, datetime
for line in open(sys.argv[1]):
    try:
        d = json.loads(line)
    except ValueError:
        continue
    if "get_scheduled_flow_runs" in json.dumps(d):
        t = datetime.datetime.fromisoformat(d["timestamp"].replace("Z", "+00:00"))
        print(int(t.timestamp() * 1e9)); break
PY
)"
  sleep 5
  rss="$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")"
  kill -INT "$pid"; wait "$pid" 2>/dev/null || true
  echo "run $i: start → first poll $(( (first - start_ns) / 1000000 )) ms; idle RSS $(( rss / 1024 )) MiB (${rss} kB)"
done
