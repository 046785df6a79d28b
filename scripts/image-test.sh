#!/usr/bin/env bash
# Runs the built image the way the prefect-worker Helm chart runs it, against a real
# Prefect server and kubesim, until a flow run completes.
#
# Usage: scripts/image-test.sh [--tag TAG]      (default prefect-worker-rs:dev; build it
#                                                with scripts/image.sh first)
#
# The chart's two containers come from its rendered Deployment
# (tests/e2e/fixtures/prefect-worker-chart/rendered.yaml): command, args and env as
# rendered, PREFECT_API_URL pointed at this run's server. Like the pod: `--read-only`
# root filesystem, uid 1001, tmpfs (emptyDir) at /home/prefect and /tmp,
# baseJobTemplate.json mounted into /home/prefect, working directory /home/prefect,
# and a service account mount (token, ca.crt, namespace) with KUBERNETES_SERVICE_HOST
# and _PORT, so the worker finds the cluster in-cluster, as in a pod. kubesim serves
# TLS, requires the token and enforces the chart's Role. Host networking (this
# machine's Docker runs without a bridge). The flow's own pod runs as a local process
# of kubesim's kubelet, from this checkout's .venv.
#
# Steps: the init container (pool missing: exits 0), the worker container, /health,
# the init container again (pool exists: template synced), a flow run to Completed,
# `docker diff` (nothing written outside the tmpfs mounts), SIGTERM and exit code.
# Not part of .ci/run. IMAGE_TEST_HEALTH_PORT (default 8080) sets the health port.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${repo_root}"
tag="prefect-worker-rs:dev"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --tag) tag="$2"; shift 2 ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

say() { printf '\n== %s\n' "$*"; }
die() { printf 'image-test: error: %s\n' "$*" >&2; exit 1; }

fixture="${repo_root}/tests/e2e/fixtures/prefect-worker-chart/rendered.yaml"
health_port="${IMAGE_TEST_HEALTH_PORT:-8080}"
work="$(mktemp -d)"
chmod 755 "${work}"
state="${work}/prefect-state"
worker_container="prefect-worker-image-test-$$"
pids=()

cleanup() {
    local code=$?
    docker rm -f "${worker_container}" >/dev/null 2>&1 || true
    for p in "${pids[@]:-}"; do [[ -n "${p}" ]] && kill "${p}" 2>/dev/null || true; done
    for p in "${pids[@]:-}"; do [[ -n "${p}" ]] && wait "${p}" 2>/dev/null || true; done
    scripts/prefect-server.sh stop --state-dir "${state}" >/dev/null 2>&1 || true
    rm -rf "${work}"
    exit "${code}"
}
trap cleanup EXIT INT TERM

docker image inspect "${tag}" >/dev/null 2>&1 || die "no image ${tag}: build it with scripts/image.sh"

say "Image ${tag}"
docker image inspect "${tag}" --format 'user {{.Config.User}}, workdir {{.Config.WorkingDir}}, entrypoint {{json .Config.Entrypoint}}, exposed {{json .Config.ExposedPorts}}, size {{.Size}} bytes'
docker image inspect "${tag}" --format '{{range $k, $v := .Config.Labels}}{{$k}}={{$v}}{{"\n"}}{{end}}' | grep '^org.opencontainers'

say "Building kubesim; starting a Prefect 3.9.1 server"
cargo build -q -p kubesim
scripts/prefect-server.sh provision >/dev/null
api_url="$(scripts/prefect-server.sh start --state-dir "${state}")"
echo "Prefect API: ${api_url}"
api() { curl -fsS -X "$1" "${api_url}$2" -H 'content-type: application/json' ${3:+-d "$3"}; }
json() { "${repo_root}/.venv/bin/python" -c "import sys, json; d = json.load(sys.stdin); print($1)"; }

say "Starting kubesim: TLS, a service-account token, the chart's Role enforced"
sa="${work}/serviceaccount"
mkdir -p "${sa}"
token="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
printf '%s' "${token}" > "${sa}/token"
printf 'prefect' > "${sa}/namespace"
target/debug/kubesim --port 0 --tls --token "${token}" --namespace prefect \
    --rbac "${fixture}" --rbac-user system:serviceaccount:prefect:prefect-worker \
    --ca-out "${sa}/ca.crt" \
    --kubelet-path "${repo_root}/.venv/bin:/usr/local/bin:/usr/bin:/bin" \
    >"${work}/kubesim.out" 2>"${work}/kubesim.err" &
pids+=("$!")
for _ in $(seq 1 200); do grep -q 'listening on' "${work}/kubesim.out" 2>/dev/null && break; sleep 0.1; done
kube_url="$(sed -n 's/^kubesim listening on //p' "${work}/kubesim.out")"
[[ -n "${kube_url}" ]] || { cat "${work}/kubesim.err"; die "kubesim did not start"; }
kube_port="${kube_url##*:}"
chmod 644 "${sa}"/*
echo "kubesim: ${kube_url}"

# The chart's containers as rendered: bash arrays of command, args and env (-e K=V).
"${repo_root}/.venv/bin/python" - "${fixture}" "${api_url}" "${work}" >"${work}/containers.sh" <<'PY'
import shlex, sys, yaml
path, api_url, work = sys.argv[1:4]
docs = [d for d in yaml.safe_load_all(open(path)) if d]
cm = next(d for d in docs if d["kind"] == "ConfigMap")
open(f"{work}/baseJobTemplate.json", "w").write(cm["data"]["baseJobTemplate.json"])
spec = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
def emit(name, c):
    q = lambda xs: " ".join(shlex.quote(str(x)) for x in xs)
    print(f"{name}_cmd=({q(c.get('command') or [])})")
    print(f"{name}_args=({q(c.get('args') or [])})")
    env = []
    for e in c.get("env") or []:
        assert "valueFrom" not in e, e
        value = api_url if e["name"] == "PREFECT_API_URL" else e.get("value", "")
        env += ["-e", f"{e['name']}={value}"]
    print(f"{name}_env=({q(env)})")
    print(f"{name}_workdir={shlex.quote(c['workingDir'])}")
emit("worker", next(c for c in spec["containers"] if c["name"] == "prefect-worker"))
emit("init", next(c for c in spec["initContainers"] if c["name"] == "sync-base-job-template"))
PY
# shellcheck disable=SC1091
source "${work}/containers.sh"
chmod 644 "${work}/baseJobTemplate.json"
pod=(--network host --read-only --user 1001:1001
    --tmpfs /home/prefect:rw,uid=1001,gid=1001,mode=0700 --tmpfs /tmp:rw,mode=1777
    -v "${work}/baseJobTemplate.json:/home/prefect/baseJobTemplate.json:ro")
echo "worker: ${worker_cmd[*]} ${worker_args[*]}"
echo "env:    ${worker_env[*]}"

run_init() {
    docker run --rm "${pod[@]}" -w "${init_workdir}" "${init_env[@]}" \
        --entrypoint "${init_cmd[0]}" "${tag}" "${init_cmd[@]:1}" "${init_args[@]}"
}

say "Init container sync-base-job-template (the pool does not exist yet)"
run_init

say "Worker container"
docker run -d --name "${worker_container}" "${pod[@]}" -w "${worker_workdir}" \
    -v "${sa}:/var/run/secrets/kubernetes.io/serviceaccount:ro" \
    -e KUBERNETES_SERVICE_HOST=127.0.0.1 -e KUBERNETES_SERVICE_PORT="${kube_port}" \
    "${worker_env[@]}" -e PREFECT_WORKER_WEBSERVER_PORT="${health_port}" \
    --entrypoint "${worker_cmd[0]}" "${tag}" "${worker_cmd[@]:1}" "${worker_args[@]}" >/dev/null
pool="chart-pool"
for _ in $(seq 1 300); do api GET "/work_pools/${pool}" >/dev/null 2>&1 && break; sleep 0.2; done
api GET "/work_pools/${pool}" >/dev/null || { docker logs "${worker_container}"; die "the worker did not create its pool"; }
for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:${health_port}/health" >/dev/null 2>&1 && break; sleep 0.1; done
echo "GET /health on ${health_port} (the chart's liveness probe): $(curl -sS -w ' %{http_code}' "http://127.0.0.1:${health_port}/health")"

say "Init container again (the pool exists: its template is synced)"
run_init | tail -n 3

say "Deploying examples/flows/hello.py:hello and running it"
flow_id="$(api POST /flows/ '{"name": "hello"}' | json 'd["id"]')"
deployment_id="$(api POST /deployments/ "{\"name\": \"image-test\", \"flow_id\": \"${flow_id}\", \"work_pool_name\": \"${pool}\",
  \"entrypoint\": \"hello.py:hello\",
  \"pull_steps\": [{\"prefect.deployments.steps.set_working_directory\": {\"directory\": \"${repo_root}/examples/flows\"}}]}" | json 'd["id"]')"
run_id="$(api POST "/deployments/${deployment_id}/create_flow_run" '{}' | json 'd["id"]')"
echo "flow run ${run_id}"
final=""
for _ in $(seq 1 600); do
    final="$(api GET "/flow_runs/${run_id}" | json 'd["state"]["type"]')"
    case "${final}" in COMPLETED|FAILED|CRASHED|CANCELLED) break ;; esac
    sleep 0.5
done
sleep 2 # the engine's last log batch
echo "flow run logs:"
api POST /logs/filter "{\"logs\": {\"flow_run_id\": {\"any_\": [\"${run_id}\"]}}, \"sort\": \"TIMESTAMP_ASC\"}" \
    | json '"\n".join("  [%s] %s" % (l["name"].rsplit(".", 1)[-1], l["message"][:200]) for l in d)'
echo "final state: ${final}"

say "What the container wrote outside its tmpfs mounts (docker diff)"
# Docker itself adds the service-account volume's mount point (/run/secrets/...,
# /var/run being a link to /run); anything else would be the worker writing to its
# read-only root filesystem.
docker diff "${worker_container}" | sed 's/^/  /'
written="$(docker diff "${worker_container}" | grep -vE '^(C /run|A /run/secrets(/kubernetes\.io(/serviceaccount)?)?)$' || true)"
echo "(end of diff; besides the mount point: ${written:-nothing})"
refused="$(curl -fsS --cacert "${sa}/ca.crt" "${kube_url}/_sim/requests" | json 'sum(1 for r in d if r["status"] == 403)')"
made="$(curl -fsS --cacert "${sa}/ca.crt" "${kube_url}/_sim/requests" | json 'len(d)')"
echo "Kubernetes API requests: ${made}, refused by the chart's Role: ${refused}"

say "SIGTERM (docker stop), as the kubelet stops the pod"
docker stop -t 30 "${worker_container}" >/dev/null
code="$(docker inspect -f '{{.State.ExitCode}}' "${worker_container}")"
echo "exit code ${code}; worker log (last lines):"
docker logs "${worker_container}" 2>&1 | tail -n 8 | sed 's/^/  /'

[[ "${final}" == "COMPLETED" && "${code}" == "0" && "${refused}" == "0" && -z "${written}" ]] \
    || die "expected COMPLETED, exit 0, no refused request, nothing written; got ${final}, exit ${code}, ${refused} refused, written: ${written}"
say "Image test passed: the chart's invocation ran a flow to ${final}"
