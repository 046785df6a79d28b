#!/usr/bin/env bash
# The demo: a real flow run through prefect-worker to Completed, then one failing case.
#
# Starts a throw-away Prefect server (scripts/prefect-server.sh), the simulated Kubernetes
# cluster (kubesim, whose kubelet runs each container's command as a local process), and
# `prefect-worker start --pool demo --type kubernetes`; deploys examples/flows/hello.py
# (code pulled from this checkout); runs it and prints the flow's own log lines and its
# final state; then runs it with image `sim/pull-error` and prints the Crashed state and
# its diagnosis. Stops everything it started, whatever happens.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
work="$(mktemp -d)"
state="$work/prefect-state"
pids=()

# Each step says what it does and, when the next one starts, how long it took.
demo_start="$(date +%s)"
step_name=""
step_start="${demo_start}"
steps=()
end_step() {
  if [ -n "$step_name" ]; then
    local took=$(( $(date +%s) - step_start ))
    printf '\033[2m   (%s: %d s)\033[0m\n' "$step_name" "$took"
    steps+=("$(printf '%4d s  %s' "$took" "$step_name")")
  fi
  step_name=""
}
say() {
  end_step
  step_name="$1"
  step_start="$(date +%s)"
  printf '\n\033[1m== %s\033[0m\n' "$*"
}

cleanup() {
  local code=$?
  for p in "${pids[@]:-}"; do
    [ -n "$p" ] && kill "$p" 2>/dev/null || true
  done
  for p in "${pids[@]:-}"; do
    [ -n "$p" ] && wait "$p" 2>/dev/null || true
  done
  scripts/prefect-server.sh stop --state-dir "$state" >/dev/null 2>&1 || true
  rm -rf "$work"
  exit "$code"
}
trap cleanup EXIT INT TERM

say "Building prefect-worker and kubesim"
if [ ! -x target/debug/prefect-worker ] || [ ! -x target/debug/kubesim ]; then
  echo "First build: cargo compiles about 300 crates (a few minutes on 2 cores); its progress follows."
fi
cargo build -p prefect-worker-bin -p kubesim

say "Installing Prefect 3.9.1 (the real server and the flow's engine)"
if [ -x .venv/bin/prefect ] && .venv/bin/python -c 'import importlib.metadata as m, sys; sys.exit(m.version("prefect") != "3.9.1")' 2>/dev/null; then
  echo "Prefect 3.9.1 is already installed in .venv."
else
  echo "Installing prefect==3.9.1 from PyPI into .venv (git-ignored; first run only, a minute or two)."
  PREFECT_SERVER_VERBOSE_INSTALL=1 scripts/prefect-server.sh provision >/dev/null
fi

say "Starting a throw-away Prefect 3.9.1 server (SQLite)"
echo "The server starts in about ten seconds on a quiet machine (a minute or more on a busy one)."
api_url="$(scripts/prefect-server.sh start --state-dir "$state")"
echo "Prefect API: $api_url"

say "Starting the simulated Kubernetes cluster"
kubeconfig="$work/kubeconfig"
target/debug/kubesim --port 0 --kubeconfig-out "$kubeconfig" \
  --kubelet-path "$repo/.venv/bin:/usr/local/bin:/usr/bin:/bin" >"$work/kubesim.log" 2>&1 &
pids+=("$!")
for _ in $(seq 1 100); do [ -s "$kubeconfig" ] && break; sleep 0.1; done
[ -s "$kubeconfig" ] || { cat "$work/kubesim.log"; echo "kubesim did not start" >&2; exit 1; }
grep -m1 'listening' "$work/kubesim.log" || true

say "Starting prefect-worker start --pool demo --type kubernetes"
PREFECT_API_URL="$api_url" KUBECONFIG="$kubeconfig" PREFECT_WORKER_QUERY_SECONDS=1 \
  PREFECT_PROFILES_PATH="$work/profiles.toml" \
  target/debug/prefect-worker start --pool demo --type kubernetes --name demo-worker \
  >"$work/worker.out" 2>"$work/worker.err" &
pids+=("$!")

api() { # METHOD PATH [JSON]
  curl -fsS -X "$1" "$api_url$2" -H 'content-type: application/json' ${3:+-d "$3"}
}
json() { "$repo/.venv/bin/python" -c "import sys, json; d = json.load(sys.stdin); print($1)"; }

for _ in $(seq 1 100); do api GET /work_pools/demo >/dev/null 2>&1 && break; sleep 0.2; done

say "Deploying examples/flows/hello.py:hello"
flow_id="$(api POST /flows/ '{"name": "hello"}' | json 'd["id"]')"
deployment_id="$(api POST /deployments/ "{\"name\": \"hello-demo\", \"flow_id\": \"$flow_id\", \"work_pool_name\": \"demo\",
  \"entrypoint\": \"hello.py:hello\",
  \"pull_steps\": [{\"prefect.deployments.steps.set_working_directory\": {\"directory\": \"$repo/examples/flows\"}}]}" | json 'd["id"]')"
echo "deployment $deployment_id"

wait_final() { # RUN_ID -> prints the final state
  local id="$1" t
  for _ in $(seq 1 300); do
    t="$(api GET "/flow_runs/$id" | json 'd["state"]["type"]')"
    case "$t" in COMPLETED|FAILED|CRASHED|CANCELLED) echo "$t"; return 0 ;; esac
    sleep 0.5
  done
  echo "TIMEOUT"; return 1
}

show_logs() { # RUN_ID
  api POST /logs/filter "{\"logs\": {\"flow_run_id\": {\"any_\": [\"$1\"]}}, \"sort\": \"TIMESTAMP_ASC\"}" \
    | json '"\n".join("  [%s] %s" % (l["name"].rsplit(".", 1)[-1], l["message"][:300]) for l in d)'
}

say "Run 1: the hello flow"
run1="$(api POST "/deployments/$deployment_id/create_flow_run" '{}' | json 'd["id"]')"
state1="$(wait_final "$run1")"
sleep 2 # let the engine's last log batch land
echo "Flow run logs (worker and flow):"
show_logs "$run1"
echo "Worker stdout (stream_output):"
sed 's/^/  /' "$work/worker.out" | head -20
echo
echo "Final state: $state1"

say "Run 2: image sim/pull-error (the image cannot be pulled)"
run2="$(api POST "/deployments/$deployment_id/create_flow_run" '{"job_variables": {"image": "sim/pull-error", "pod_watch_timeout_seconds": 10}}' | json 'd["id"]')"
state2="$(wait_final "$run2")"
echo "Final state: $state2"
echo "Message: $(api GET "/flow_runs/$run2" | json 'd["state"]["message"]')"

end_step
[ "$state1" = "COMPLETED" ] && [ "$state2" = "CRASHED" ] || {
  echo "unexpected result; worker log:" >&2; tail -50 "$work/worker.err" >&2; exit 1; }
printf '\n\033[1m== Demo finished in %d s: hello → %s, sim/pull-error → %s\033[0m\n' \
  "$(( $(date +%s) - demo_start ))" "$state1" "$state2"
printf '%s\n' "${steps[@]}"
