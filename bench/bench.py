#!/usr/bin/env python3
"""The scale benchmark of issue 10: our worker, the real Python worker
(`prefect worker start --type kubernetes` from prefect-kubernetes 0.8.0) and, for the
burst, the server-bound limit client, side by side against one Prefect 3.9.1 server on
PostgreSQL and one kubesim. Writes docs/benchmarks.md (and the burst chart beside it).

Run it through scripts/bench.sh (which builds the binaries and the benchmark's venv):

    scripts/bench.sh                          # every scenario, full size
    scripts/bench.sh --scenarios burst        # one scenario; the others' stored results stay
    scripts/bench.sh --smoke                  # tiny sizes (what the test suite runs)

Each scenario's result is stored in bench/results/<scenario>.json as soon as it is
measured; the report is written from every stored result, so a failed or interrupted
scenario is re-run alone.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from env import REPO, Contender, Kubesim, Server  # noqa: E402
from report import write_report  # noqa: E402
from scenarios import SCENARIOS, Ctx  # noqa: E402

FULL = {
    "startup_reps_ours": 5, "startup_reps_python": 3, "idle_seconds": 10,
    "burst": 500,
    "held": 1000, "hold_seconds": 60,
    "churn_ours": 5000, "churn_python": 500, "churn_mark": 1000,
    "latency": 50, "latency_cap_s": 180,
}
SMOKE = {
    "startup_reps_ours": 1, "startup_reps_python": 1, "idle_seconds": 1,
    "burst": 4,
    "held": 4, "hold_seconds": 2,
    "churn_ours": 6, "churn_python": 4, "churn_mark": 2,
    "latency": 2, "latency_cap_s": 60, "crash_pod_watch_timeout_s": 3,
}


def kubernetes_template(venv: Path) -> dict:
    """The Kubernetes pool's default base job template as Prefect 3.9.1 ships it."""
    for f in venv.glob("lib/python*/site-packages/prefect/server/api/collections_data/views/aggregate-worker-metadata.json"):
        data = json.loads(f.read_text())
        return data["prefect-kubernetes"]["kubernetes"]["default_base_job_configuration"]
    raise SystemExit(f"no Prefect in {venv}: run scripts/prefect-server.sh provision")


def main() -> int:
    if os.environ.get("BENCH_TRACEBACK_AFTER"):
        import faulthandler
        faulthandler.dump_traceback_later(float(os.environ["BENCH_TRACEBACK_AFTER"]), repeat=True)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated: " + ",".join(SCENARIOS))
    ap.add_argument("--contenders", default="ours,python,limit", help="ours, python, limit (burst only)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: checks that every scenario still runs")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=N", help="override a size, e.g. churn_ours=2000")
    ap.add_argument("--worker-bin", default=str(REPO / "target/release/prefect-worker"))
    ap.add_argument("--worker-env", action="append", default=[], metavar="KEY=VALUE",
                    help="extra environment for our worker, e.g. PREFECT_WORKER_MAX_CONCURRENT_SUBMISSIONS=128")
    ap.add_argument("--kubesim-bin", default=str(REPO / "target/release/kubesim"))
    ap.add_argument("--python-venv", default=str(REPO / "bench/.venv"), help="venv with prefect-kubernetes==0.8.0")
    ap.add_argument("--server-venv", default=str(REPO / ".venv"))
    ap.add_argument("--results", default=str(REPO / "bench/results"))
    ap.add_argument("--out", default=str(REPO / "docs/benchmarks.md"))
    ap.add_argument("--query-seconds", type=float, default=None,
                    help="PREFECT_WORKER_QUERY_SECONDS for the workers (default: theirs, 10 s; --smoke: 1 s)")
    ap.add_argument("--timeout", type=float, default=900, help="longest single wait, seconds")
    ap.add_argument("--report-only", action="store_true", help="rewrite the report from the stored results")
    ap.add_argument("--keep-contenders", action="store_true",
                    help="keep the stored results of contenders not run this time (marked with when they were measured)")
    args = ap.parse_args()
    if args.report_only:
        write_report(Path(args.results), Path(args.out), machine_and_versions(args))
        return 0

    sizes = dict(SMOKE if args.smoke else FULL)
    for kv in args.set:
        k, v = kv.split("=", 1)
        sizes[k] = int(v)
    wanted = [s for s in args.scenarios.split(",") if s]
    names = [c for c in args.contenders.split(",") if c]
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="prefect-bench-"))

    # A signal ends the run through `finally` (servers and workers stopped).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    server = Server(work / "server")
    sim = Kubesim(Path(args.kubesim_bin), work)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "KUBERNETES_"))}
    failures = []
    try:
        server.start()
        sim.start()
        common = {**base_env, "PREFECT_API_URL": server.api, "KUBECONFIG": str(sim.kubeconfig),
                  "PREFECT_PROFILES_PATH": str(work / "no-profiles.toml")}
        query = args.query_seconds if args.query_seconds is not None else (1.0 if args.smoke else None)
        if query is not None:
            common["PREFECT_WORKER_QUERY_SECONDS"] = str(query)
            sizes["query_seconds"] = query
        contenders = {}
        if "ours" in names:
            contenders["ours"] = Contender("ours", lambda pool, n: [
                args.worker_bin, "start", "--pool", pool, "--name", n, "--type", "kubernetes"],
                {**common, **dict(kv.split("=", 1) for kv in args.worker_env)})
        if "python" in names:
            prefect = Path(args.python_venv) / "bin/prefect"
            if not prefect.exists():
                raise SystemExit(f"{prefect} missing: scripts/bench.sh creates it")
            contenders["python"] = Contender("python", lambda pool, n: [
                str(prefect), "worker", "start", "--type", "kubernetes", "--pool", pool, "--name", n],
                {**common, "PREFECT_HOME": str(work / "python-home"), "PREFECT_LOGGING_LEVEL": "WARNING"})
        ctx = Ctx(server, sim, work, contenders, "limit" in names,
                  kubernetes_template(Path(args.server_venv)), sizes, args.timeout)
        for name in wanted:
            load_before = os.getloadavg()
            t0 = time.time()
            print(f"[bench] {name} ...", file=sys.stderr, flush=True)
            try:
                data = SCENARIOS[name](ctx)
            except Exception as e:  # one scenario failing must not lose the others
                traceback.print_exc()
                failures.append(name)
                data = {"error": f"{type(e).__name__}: {e}"}
            data["meta"] = {
                "measured_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "duration_s": round(time.time() - t0, 1),
                "load_before": [round(x, 2) for x in load_before],
                "load_after": [round(x, 2) for x in os.getloadavg()],
                "sizes": {k: v for k, v in sizes.items()}, "smoke": args.smoke, "contenders": names,
                "worker_env": args.worker_env,
            }
            if args.keep_contenders:
                keep_other_contenders(results / f"{name}.json", data)
            (results / f"{name}.json").write_text(json.dumps(data, indent=1))
            print(f"[bench] {name} done in {data['meta']['duration_s']} s", file=sys.stderr, flush=True)
    finally:
        sim.stop()
        server.stop()
    write_report(results, Path(args.out), machine_and_versions(args))
    print(f"[bench] report: {args.out}", file=sys.stderr)
    return 1 if failures else 0


def keep_other_contenders(stored: Path, data: dict) -> None:
    """Carries the stored rows of contenders this run did not measure into `data`, each
    marked with when it was measured, so re-measuring one worker keeps the others' rows."""
    if "error" in data or not stored.exists():
        return
    old = json.loads(stored.read_text())
    kept = data.setdefault("kept", {})
    for name, row in old.get("contenders", {}).items():
        if name in data.get("contenders", {}):
            continue
        data.setdefault("contenders", {})[name] = row
        kept[name] = old.get("kept", {}).get(name) or old.get("meta", {}).get("measured_at", "?")


def machine_and_versions(args) -> dict:
    def run(*cmd) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout.strip()
        except OSError:
            return "?"
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = next((line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), "0")
    py = Path(args.python_venv) / "bin/python"
    return {
        "cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(int(mem) / 1024 / 1024, 1),
        "kernel": platform.release(),
        "rustc": run("rustc", "--version"),
        "commit": run("git", "-C", str(REPO), "rev-parse", "--short", "HEAD"),
        "prefect": run(str(Path(args.server_venv) / "bin/python"), "-c", "import prefect; print(prefect.__version__)"),
        "prefect_kubernetes": run(str(py), "-c",
                                  "from importlib.metadata import version; print(version('prefect-kubernetes'))")
        if py.exists() else "not installed",
        "postgres": run("bash", "-c", "ls -d /usr/lib/postgresql/*/ | sort -V | tail -1 | xargs basename"),
        "worker_binary_bytes": Path(args.worker_bin).stat().st_size if Path(args.worker_bin).exists() else None,
    }


if __name__ == "__main__":
    sys.exit(main())
