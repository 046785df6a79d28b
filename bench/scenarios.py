"""The five scenarios of issue 10. Each returns a JSON-able dict of what it measured;
`bench.py` stores it per scenario (so one scenario can be re-run alone) and writes the
report from all stored results."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from env import (
    REPO, Contender, Kubesim, Running, Server, Watcher, endpoint, k8s_endpoint, time_of_day, wait_until,
)


@dataclass
class Ctx:
    server: Server
    sim: Kubesim
    work: Path
    contenders: dict[str, Contender]  # "ours", "python" (those asked for)
    with_limit: bool
    template: dict
    n: dict  # sizes per scenario
    timeout: float  # upper bound of one wait, seconds


# ------------------------------------------------------------------ Prefect setup


def setup_pool(ctx: Ctx, tag: str, job_variables: dict, paused: bool) -> tuple[str, str]:
    """A fresh pool (kubernetes default template), flow and deployment; (pool, deployment id)."""
    suffix = uuid.uuid4().hex[:6]
    pool = f"{tag}-{suffix}"
    ctx.server.call("POST", "/work_pools/", {"name": pool, "type": "kubernetes",
                                             "base_job_template": ctx.template, "is_paused": paused})
    flow = ctx.server.call("POST", "/flows/", {"name": f"bench-{tag}"})
    dep = ctx.server.call("POST", "/deployments/", {
        "name": f"{tag}-{suffix}", "flow_id": flow["id"], "work_pool_name": pool,
        "job_variables": job_variables,
    })
    return pool, dep["id"]


def create_runs(ctx: Ctx, deployment: str, n: int) -> list[str]:
    ids = []
    for _ in range(n):
        run = ctx.server.call("POST", f"/deployments/{deployment}/create_flow_run", {})
        ids.append(run["id"])
    return ids


def set_paused(ctx: Ctx, pool: str, paused: bool) -> None:
    ctx.server.call("PATCH", f"/work_pools/{pool}", {"is_paused": paused})


def first_poll_at(ctx: Ctx, offset: int, pool: str) -> float | None:
    """Time of day of the first poll of `pool` logged after `offset`."""
    for tod, method, path, _ in ctx.server.requests_since(offset):
        if method == "POST" and path == f"/api/work_pools/{pool}/get_scheduled_flow_runs":
            return tod
    return None


def wait_first_poll(ctx: Ctx, offset: int, pool: str, w: Running | None) -> float:
    def probe():
        if w is not None and not w.alive():
            raise RuntimeError(f"{w.name} worker exited: " + w.log.read_text(errors="replace")[-3000:])
        return first_poll_at(ctx, offset, pool)
    return wait_until(f"the first poll of {pool}", ctx.timeout, probe, every=0.02)


def ended(ctx: Ctx, ids: list[str]) -> int:
    """How many of the runs are final (a run the worker crashed, e.g. after a server error
    during its submission, never gets a pod)."""
    return sum(1 for r in states(ctx, ids).values()
               if (r.get("state") or {}).get("type") in ("CRASHED", "FAILED", "CANCELLED", "COMPLETED"))


class Settled:
    """A probe: every run has a running pod, or has ended without one."""

    def __init__(self, ctx: Ctx, ids: list[str], pods: Watcher):
        self.ctx, self.ids, self.pods, self.ended, self.checked = ctx, ids, pods, 0, 0.0

    def __call__(self) -> bool:
        if len(self.pods.running) + self.ended >= len(self.ids):
            return True
        if time.time() - self.checked > 5:
            self.checked = time.time()
            self.ended = ended(self.ctx, self.ids)
        return len(self.pods.running) + self.ended >= len(self.ids)


def states(ctx: Ctx, ids: list[str]) -> dict[str, dict]:
    out = {}
    for i in range(0, len(ids), 200):
        chunk = ids[i:i + 200]
        runs = ctx.server.call("POST", "/flow_runs/filter", {"flow_runs": {"id": {"any_": chunk}}, "limit": 200})
        for r in runs:
            out[r["id"]] = r
    return out


class Sampler:
    """Samples a process's RSS every half second (the peak and the last value)."""

    def __init__(self, w: Running | None):
        self.w, self.peak, self.last, self._stop = w, 0, 0, False
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self._stop and self.w is not None:
            v = self.w.rss_kib()
            self.peak, self.last = max(self.peak, v), v
            time.sleep(0.5)

    def stop(self):
        self._stop = True


def requests_breakdown(server_reqs, k8s_reqs, runs: int) -> dict:
    p = Counter(endpoint(m, path) for _, m, path, _ in server_reqs)
    k = Counter(k8s_endpoint(r) for r in k8s_reqs)
    return {
        "prefect_total": sum(p.values()), "k8s_total": sum(k.values()),
        "prefect_per_run": round(sum(p.values()) / max(runs, 1), 2),
        "k8s_per_run": round(sum(k.values()) / max(runs, 1), 2),
        "prefect": dict(p.most_common()), "k8s": dict(k.most_common()),
        "prefect_errors": sum(1 for *_, s in server_reqs if s >= 400),
        "k8s_errors": sum(1 for r in k8s_reqs if r["status"] >= 400),
    }


def tod_to_epoch(tod: float, ref: float) -> float:
    """A logged time of day → epoch seconds, near `ref`."""
    base = ref - time_of_day(ref)
    t = base + tod
    if t - ref > 43200:
        t -= 86400
    return t


# ------------------------------------------------------------------ 1. start-up and idle


def rss_parts(pid: int) -> dict:
    """What the resident memory is: file-backed pages (the binary's code and read-only
    data, shared libraries) and anonymous ones (heap, stacks, relocated data)."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            k, _, v = line.partition(":")
            if k in ("RssAnon", "RssFile", "Threads"):
                out[k.lower() if k != "Threads" else "threads"] = int(v.split()[0])
    except OSError:
        pass
    out["by_mapping"] = rss_by_mapping(pid)
    return out


def rss_by_mapping(pid: int) -> dict:
    """Resident kB by what is mapped (/proc/PID/smaps): the executable and each shared
    library by file name (their anonymous part, relocated data, counted apart as
    "<name> (relocated)"), "[heap]", "[stack]", and "anonymous" (other anonymous maps:
    thread stacks, large allocations, the allocator's arenas)."""
    out: Counter = Counter()
    name = None
    try:
        for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
            head = line.split()
            if not head:
                continue
            if not head[0].endswith(":"):  # a mapping's header: range perms offset dev inode [path]
                name = Path(head[5]).name if len(head) > 5 else "anonymous"
            elif head[0] == "Rss:":
                out[name] += int(head[1])
            elif head[0] == "Anonymous:" and name and not name.startswith("[") and name != "anonymous":
                out[name] -= int(head[1])
                out[f"{name} (relocated)"] += int(head[1])
    except OSError:
        pass
    return {k: v for k, v in out.most_common() if v}


def startup(ctx: Ctx) -> dict:
    out = {}
    for name, c in ctx.contenders.items():
        reps = ctx.n["startup_reps_" + name]
        pool, _ = setup_pool(ctx, f"idle-{name}", {}, paused=False)
        # One round trip of the poll itself, from the driver, after each repetition (the
        # floor under "start → first poll" on this server and machine at that moment).
        rtts = []
        samples = []
        k8s_at_start: dict = {}
        for _ in range(reps):
            off = ctx.server.log_offset()
            ctx.sim.clear_requests()
            w = c.start(pool, ctx.work)
            tod = wait_first_poll(ctx, off, pool, w)
            first_ms = (tod_to_epoch(tod, w.started) - w.started) * 1000
            time.sleep(max(0.0, w.started + ctx.n["idle_seconds"] - time.time()))
            samples.append({"first_poll_ms": round(first_ms, 1), "rss_kib": w.rss_kib(), "cpu_s": round(w.cpu(), 3),
                            **rss_parts(w.proc.pid)})
            # What the worker asks of Kubernetes when it starts (kubesim must serve it all).
            k8s_at_start = {f"{k8s_endpoint(r)} → {r['status']}": 1 for r in ctx.sim.requests()}
            w.stop()
            t = time.time()
            ctx.server.call("POST", f"/work_pools/{pool}/get_scheduled_flow_runs", {})
            rtts.append((time.time() - t) * 1000)
        out[name] = {
            "runs": samples,
            "first_poll_ms_median": statistics.median(s["first_poll_ms"] for s in samples),
            "poll_rtt_ms_median": round(statistics.median(rtts), 1),
            "rss_kib_median": statistics.median(s["rss_kib"] for s in samples),
            "cpu_s_median": statistics.median(s["cpu_s"] for s in samples),
            "k8s_requests_at_start": sorted(k8s_at_start),
        }
    return {"idle_seconds": ctx.n["idle_seconds"], "contenders": out}


# ------------------------------------------------------------------ 2. burst


async def limit_client(ctx: Ctx, pool: str, ns: str, n: int, concurrency: int = 64) -> None:
    """The server-bound limit: only the calls whose effects a user sees, as the Python
    worker makes them, for every run at once (bounded like our submissions)."""
    import httpx

    api = ctx.server.api
    sem = asyncio.Semaphore(concurrency)
    ua = {"user-agent": "prefect/3.9.1 (API 0.8.4)", "x-prefect-api-version": "0.8.4"}
    async with httpx.AsyncClient(timeout=120, headers=ua, limits=httpx.Limits(max_connections=concurrency + 4)) as h, \
            httpx.AsyncClient(timeout=120) as k:

        async def one(run: dict) -> None:
            async with sem:
                rid = run["id"]
                (await h.get(f"{api}/deployments/{run['deployment_id']}")).raise_for_status()
                r = await h.post(f"{api}/flow_runs/{rid}/set_state",
                                 json={"state": {"type": "PENDING", "name": "Pending"}, "force": False})
                r.raise_for_status()
                if r.json().get("status") != "ACCEPT":
                    raise RuntimeError(f"Pending not accepted: {r.text}")
                flow = (await h.get(f"{api}/flows/{run['flow_id']}")).raise_for_status().json()
                (await h.patch(f"{api}/flow_runs/{rid}/labels", json={"prefect.worker.name": "limit"})).raise_for_status()
                (await h.post(f"{api}/flow_runs/{rid}/set_state",
                              json={"state": {"type": "PENDING", "name": "Submitting"}, "force": False})).raise_for_status()
                job = {"apiVersion": "batch/v1", "kind": "Job",
                       "metadata": {"generateName": f"{flow['name']}-", "namespace": ns,
                                    "labels": {"prefect.io/flow-run-id": rid}},
                       "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "containers": [
                           {"name": "prefect-job", "image": "sim/sleep:3600"}]}}}}
                created = (await k.post(f"{ctx.sim.url}/apis/batch/v1/namespaces/{ns}/jobs", json=job)).raise_for_status().json()
                (await h.patch(f"{api}/flow_runs/{rid}",
                               json={"infrastructure_pid": f"{ns}:{created['metadata']['name']}"})).raise_for_status()

        seen: set[str] = set()
        tasks = []
        while len(seen) < n:
            # The server caps a poll at PREFECT_API_DEFAULT_LIMIT (200).
            runs = (await h.post(f"{api}/work_pools/{pool}/get_scheduled_flow_runs",
                                 json={"limit": min(n, 200)})).raise_for_status().json()
            for item in runs:
                fr = item["flow_run"]
                if fr["id"] not in seen:
                    seen.add(fr["id"])
                    tasks.append(asyncio.create_task(one(fr)))
            if len(seen) < n:
                await asyncio.sleep(0.5)
        await asyncio.gather(*tasks)


def burst_one(ctx: Ctx, name: str, n: int) -> dict:
    ns = ctx.sim.namespace(f"burst-{name}-{uuid.uuid4().hex[:4]}")
    pool, dep = setup_pool(ctx, f"burst-{name}", {"image": "sim/sleep:3600", "namespace": ns}, paused=True)
    ids = create_runs(ctx, dep, n)
    w = None
    if name != "limit":
        off = ctx.server.log_offset()
        w = ctx.contenders[name].start(pool, ctx.work)
        wait_first_poll(ctx, off, pool, w)
    jobs, pods = Watcher(ctx.sim, ns, "jobs"), Watcher(ctx.sim, ns, "pods")
    ctx.sim.clear_requests()
    off = ctx.server.log_offset()
    cpu0 = w.cpu() if w else 0.0
    server_cpu0 = ctx.server.cpu()
    sampler = Sampler(w)
    t0 = time.time()
    set_paused(ctx, pool, False)
    limit_thread, limit_error = None, []
    if name == "limit":
        def drive():
            try:
                asyncio.run(limit_client(ctx, pool, ns, n))
            except BaseException as e:  # surfaced by the wait below
                limit_error.append(e)
        limit_thread = threading.Thread(target=drive, daemon=True)
        limit_thread.start()

    settled = Settled(ctx, ids, pods)

    def all_jobs():
        if limit_error:
            raise RuntimeError(f"limit client failed: {limit_error[0]!r}")
        if w is not None and not w.alive():
            raise RuntimeError(f"{name} worker exited: " + w.log.read_text(errors="replace")[-3000:])
        settled()  # refreshes the count of runs that ended without a Job
        return len(jobs.added) + settled.ended >= n
    try:
        wait_until(f"{n} Jobs ({name})", ctx.timeout, all_jobs, every=0.2)
        t_jobs = max(jobs.added.values()) - t0
        server_cpu = ctx.server.cpu()
        wait_until(f"{n} running pods ({name})", ctx.timeout, settled, every=0.2)
        t_pods = max(pods.running.values()) - t0
    finally:
        if limit_thread:
            limit_thread.join(ctx.timeout)
    # Let trailing requests about these runs (e.g. InfrastructurePending) land.
    time.sleep(3)
    cpu = (w.cpu() - cpu0) if w else None
    sampler.stop()
    server_reqs, k8s_reqs = ctx.server.requests_since(off), ctx.sim.requests()
    with_pid = sum(1 for r in states(ctx, ids).values() if r.get("infrastructure_pid"))
    timeline = sorted(t - t0 for t in jobs.added.values())
    if w:
        w.stop()
    jobs.stop()
    pods.stop()
    ctx.sim.delete_jobs(ns)
    return {
        "runs": n, "with_infrastructure_pid": with_pid, "ended_without_job": settled.ended,
        "first_job_s": round(timeline[0], 2), "all_jobs_s": round(t_jobs, 2), "all_pods_running_s": round(t_pods, 2),
        "runs_per_s": round(len(timeline) / t_jobs, 2),
        "runs_per_s_after_first_job": round((len(timeline) - 1) / max(t_jobs - timeline[0], 1e-6), 2),
        "cpu_s": None if cpu is None else round(cpu, 2), "rss_peak_kib": sampler.peak if w else None,
        "requests": requests_breakdown(server_reqs, k8s_reqs, n),
        "server_requests_per_s": round(len(server_reqs) / max(t_jobs, 1e-6), 1),
        # The Prefect server's CPU over the same window (1.0: one core busy the whole time).
        "server_cpu_per_s": None if server_cpu0 is None or server_cpu is None
        else round((server_cpu - server_cpu0) / max(t_jobs, 1e-6), 2),
        "timeline": [round(t, 3) for t in timeline],
    }


def burst(ctx: Ctx) -> dict:
    n = ctx.n["burst"]
    out = {}
    names = list(ctx.contenders) + (["limit"] if ctx.with_limit else [])
    for name in names:
        try:
            out[name] = burst_one(ctx, name, n)
        except Exception as e:  # keep the other contenders' results
            out[name] = {"error": f"{type(e).__name__}: {e}"}
    return {"runs": n, "contenders": out}


# ------------------------------------------------------------------ 3. held load


def held(ctx: Ctx) -> dict:
    n, hold = ctx.n["held"], ctx.n["hold_seconds"]
    out = {}
    for name, c in ctx.contenders.items():
        if ctx.n.get("held_" + name) == 0:
            continue
        n_c = ctx.n.get("held_" + name, n)
        ns = ctx.sim.namespace(f"held-{name}-{uuid.uuid4().hex[:4]}")
        pool, dep = setup_pool(ctx, f"held-{name}", {"image": "sim/sleep:3600", "namespace": ns}, paused=True)
        ids = create_runs(ctx, dep, n_c)
        off = ctx.server.log_offset()
        ctx.sim.clear_requests()
        w = c.start(pool, ctx.work)
        wait_first_poll(ctx, off, pool, w)
        pods = Watcher(ctx.sim, ns, "pods")
        t0 = time.time()
        set_paused(ctx, pool, False)
        settled = Settled(ctx, ids, pods)
        wait_until(f"{n_c} running pods ({name})", ctx.timeout * 3, settled, every=0.5)
        t_all = time.time() - t0
        time.sleep(5)  # the last submissions settle
        before_reqs = ctx.sim.requests()
        follows_total = sum(1 for r in before_reqs if "follow=true" in r.get("query", ""))
        ctx.sim.clear_requests()
        off = ctx.server.log_offset()
        cpu0, t_hold = w.cpu(), time.time()
        sampler = Sampler(w)
        time.sleep(hold)
        cpu = w.cpu() - cpu0
        sampler.stop()
        pods.stop()  # the driver's own watch is not the worker's
        counters = ctx.sim.counters()
        server_reqs, k8s_reqs = ctx.server.requests_since(off), ctx.sim.requests()
        open_watches = {k: v for k, v in (counters.get("open") or counters).items()} if isinstance(counters, dict) else counters
        out[name] = {
            "runs": n_c, "running": len(pods.running), "ended_without_pod": settled.ended,
            "all_running_s": round(t_all, 1), "hold_s": round(time.time() - t_hold, 1),
            "rss_kib": sampler.last, "rss_peak_kib": sampler.peak, "cpu_s": round(cpu, 3),
            "cpu_per_minute_s": round(cpu / hold * 60, 3),
            "sim_counters": open_watches,
            "log_follow_requests_before_hold": follows_total,
            "requests_during_hold": requests_breakdown(server_reqs, k8s_reqs, n_c),
        }
        w.stop()
        ctx.sim.delete_jobs(ns)
    return {"runs": n, "hold_seconds": hold, "contenders": out}


# ------------------------------------------------------------------ 4. churn


def churn(ctx: Ctx) -> dict:
    out = {}
    for name, c in ctx.contenders.items():
        n = ctx.n["churn_" + name]
        if n == 0:
            continue
        mark = min(ctx.n["churn_mark"], n // 2)
        ns = ctx.sim.namespace(f"churn-{name}-{uuid.uuid4().hex[:4]}")
        pool, dep = setup_pool(ctx, f"churn-{name}",
                               {"image": "sim/exit:0", "namespace": ns, "finished_job_ttl": 5}, paused=True)
        create_runs(ctx, dep, n)
        off = ctx.server.log_offset()
        w = c.start(pool, ctx.work)
        wait_first_poll(ctx, off, pool, w)
        jobs = Watcher(ctx.sim, ns, "jobs")
        t0, cpu0 = time.time(), w.cpu()
        set_paused(ctx, pool, False)
        marks = {}
        for at in sorted({mark, n}):
            wait_until(f"{at} completed Jobs ({name})", ctx.timeout * 10, lambda: len(jobs.completed) >= at, every=0.5)
            time.sleep(2)  # the worker sees the completion and forgets the run
            marks[at] = {"rss_kib": w.rss_kib(), "cpu_s": round(w.cpu() - cpu0, 2), "t_s": round(time.time() - t0, 1)}
        a, b = marks[mark], marks[n]
        out[name] = {
            "runs": n, "mark": mark, "marks": {str(k): v for k, v in marks.items()},
            "cpu_per_100_runs_s": round((b["cpu_s"] - a["cpu_s"]) / (n - mark) * 100, 3),
            "rss_growth_pct": round((b["rss_kib"] - a["rss_kib"]) / a["rss_kib"] * 100, 1),
            "runs_per_s": round(n / b["t_s"], 2),
        }
        w.stop()
        jobs.stop()
        ctx.sim.delete_jobs(ns)
    return {"contenders": out}


# ------------------------------------------------------------------ 5. cancellation and crash latency


def latency(ctx: Ctx) -> dict:
    n, cap = ctx.n["latency"], ctx.n["latency_cap_s"]
    out = {}
    for name, c in ctx.contenders.items():
        res = {}
        # Cancellation: CANCELLING → Job deleted → Cancelled.
        ns = ctx.sim.namespace(f"cancel-{name}-{uuid.uuid4().hex[:4]}")
        pool, dep = setup_pool(ctx, f"cancel-{name}", {"image": "sim/sleep:3600", "namespace": ns}, paused=True)
        ids = create_runs(ctx, dep, n)
        off = ctx.server.log_offset()
        w = c.start(pool, ctx.work)
        wait_first_poll(ctx, off, pool, w)
        jobs, pods = Watcher(ctx.sim, ns, "jobs"), Watcher(ctx.sim, ns, "pods")
        set_paused(ctx, pool, False)
        wait_until(f"{n} running pods ({name})", ctx.timeout, Settled(ctx, ids, pods), every=0.2)
        job_of = {}
        for job, labels in jobs.labels.items():
            job_of[labels.get("prefect.io/flow-run-id")] = job
        asked = {}
        for rid in ids:
            ctx.server.call("POST", f"/flow_runs/{rid}/set_state",
                            {"state": {"type": "CANCELLING", "name": "Cancelling"}, "force": True})
            asked[rid] = time.time()
        cancelled = {}
        deadline = time.time() + cap
        while time.time() < deadline and len(cancelled) < n:
            for rid, r in states(ctx, ids).items():
                if rid not in cancelled and (r.get("state") or {}).get("type") == "CANCELLED":
                    cancelled[rid] = time.time()
            time.sleep(0.5)
        deleted = [jobs.deleted[job_of[r]] - asked[r] for r in ids if job_of.get(r) in jobs.deleted]
        done = [cancelled[r] - asked[r] for r in ids if r in cancelled]
        res["cancel"] = summary(deleted, done, n, cap, ("job_deleted", "cancelled"))
        w.stop()
        jobs.stop()
        pods.stop()
        ctx.sim.delete_jobs(ns)
        # Crash: an image that cannot be pulled → Crashed.
        ns = ctx.sim.namespace(f"crash-{name}-{uuid.uuid4().hex[:4]}")
        crash_vars = {"image": "sim/pull-error", "namespace": ns}
        if ctx.n.get("crash_pod_watch_timeout_s"):
            crash_vars["pod_watch_timeout_seconds"] = ctx.n["crash_pod_watch_timeout_s"]
        pool, dep = setup_pool(ctx, f"crash-{name}", crash_vars, paused=True)
        ids = create_runs(ctx, dep, n)
        off = ctx.server.log_offset()
        w = c.start(pool, ctx.work)
        wait_first_poll(ctx, off, pool, w)
        jobs = Watcher(ctx.sim, ns, "jobs")
        set_paused(ctx, pool, False)
        crashed = {}
        deadline = time.time() + cap + 60
        while time.time() < deadline and len(crashed) < n:
            for rid, r in states(ctx, ids).items():
                if rid not in crashed and (r.get("state") or {}).get("type") == "CRASHED":
                    crashed[rid] = time.time()
            time.sleep(0.5)
        created = {labels.get("prefect.io/flow-run-id"): jobs.added[j] for j, labels in jobs.labels.items()}
        times = [crashed[r] - created[r] for r in ids if r in crashed and r in created]
        res["crash"] = summary([], times, n, cap + 60, ("", "crashed"))
        w.stop()
        jobs.stop()
        ctx.sim.delete_jobs(ns)
        out[name] = res
    return {"runs": n, "cap_s": cap, "contenders": out}


def summary(first: list[float], second: list[float], n: int, cap: float, names) -> dict:
    def stats(xs):
        if not xs:
            return {"count": 0}
        return {"count": len(xs), "median_s": round(statistics.median(xs), 2), "worst_s": round(max(xs), 2)}
    out = {"runs": n, "cap_s": cap}
    if names[0]:
        out[names[0]] = stats(first)
    out[names[1]] = stats(second)
    return out


SCENARIOS = {"startup": startup, "burst": burst, "held": held, "churn": churn, "latency": latency}
