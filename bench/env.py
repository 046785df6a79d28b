"""The benchmark's environment: one Prefect server on PostgreSQL, one kubesim, the
contenders' processes, and what is measured about them (RSS, CPU, requests).

Stdlib only (plus httpx for the limit client, which every Prefect venv has), so the same
code runs from the project's test venv (smoke) and the benchmark venv (full run).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DRIVER = "bench=driver"  # query marker: the driver's own requests are not counted
WATCH_MARK = "timeoutSeconds=86399"  # the driver's own kubesim watches


def http(method: str, url: str, body=None, timeout: float = 120.0):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            return r.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, raw.decode(errors="replace")


def marked(url: str) -> str:
    return url + ("&" if "?" in url else "?") + DRIVER


# ------------------------------------------------------------------ Prefect server


@dataclass
class Server:
    state_dir: Path
    api: str = ""
    log: Path | None = None
    pid: int | None = None

    def start(self) -> None:
        env = dict(os.environ)
        # Access lines (uvicorn.access) are how requests are counted on the server side.
        env["PREFECT_SERVER_LOGGING_LEVEL"] = "INFO"
        # Runs in this benchmark are created late on purpose (paused pool); keep the
        # late-runs service from touching them.
        env.setdefault("PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED", "false")
        out = subprocess.run(
            [str(REPO / "scripts/prefect-server.sh"), "start", "--postgres", "--state-dir", str(self.state_dir),
             "--watch-pid", str(os.getpid())],
            env=env, check=True, capture_output=True, text=True,
        )
        self.api = out.stdout.strip().splitlines()[-1]
        values = dict(
            line.split("=", 1) for line in (self.state_dir / "server.env").read_text().splitlines() if "=" in line
        )
        self.log = Path(values["HOME"]) / "server.log"
        self.pid = int(values["PID"]) if values.get("PID") else None

    def cpu(self) -> float | None:
        """CPU seconds the Prefect server's processes have used (not PostgreSQL's)."""
        return cpu_seconds(self.pid) if self.pid else None

    def stop(self) -> None:
        subprocess.run([str(REPO / "scripts/prefect-server.sh"), "stop", "--state-dir", str(self.state_dir)],
                       capture_output=True)

    def call(self, method: str, path: str, body=None):
        status, data = http(method, marked(self.api + path), body)
        if status >= 400:
            raise RuntimeError(f"{method} {path}: {status} {data}")
        return data

    def log_offset(self) -> int:
        return self.log.stat().st_size if self.log and self.log.exists() else 0

    def requests_since(self, offset: int) -> list[tuple[float, str, str, int]]:
        """(time of day in s, method, path, status) of every non-driver request logged."""
        out = []
        pat = re.compile(r'^(\d\d):(\d\d):(\d\d\.\d+) \| INFO\s+\| uvicorn\.access - \S+ - "(\w+) (\S+) HTTP/[\d.]+" (\d+)')
        with open(self.log, "rb") as f:
            f.seek(offset)
            for raw in f:
                m = pat.match(raw.decode(errors="replace"))
                if not m or DRIVER in m.group(5):
                    continue
                tod = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
                out.append((tod, m.group(4), m.group(5).split("?")[0], int(m.group(6))))
        return out


def time_of_day(t: float) -> float:
    lt = time.localtime(t)
    return lt.tm_hour * 3600 + lt.tm_min * 60 + lt.tm_sec + (t % 1)


UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def endpoint(method: str, path: str) -> str:
    """`POST /flow_runs/{id}/set_state` from a concrete request."""
    path = path.removeprefix("/api")
    path = UUID_RE.sub("{id}", path)
    path = re.sub(r"^/work_pools/[^/]+", "/work_pools/{pool}", path)
    return f"{method} {path}"


# ------------------------------------------------------------------ kubesim


@dataclass
class Kubesim:
    binary: Path
    work: Path
    url: str = ""
    kubeconfig: Path = field(default=Path())
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.kubeconfig = self.work / "kubeconfig"
        self.proc = subprocess.Popen(
            [str(self.binary), "--port", "0", "--kubeconfig-out", str(self.kubeconfig), "--log", "warn"],
            stdout=open(self.work / "kubesim.log", "wb"), stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 60
        while not (self.kubeconfig.exists() and self.kubeconfig.stat().st_size):
            if time.time() > deadline or self.proc.poll() is not None:
                raise RuntimeError("kubesim did not start: " + (self.work / "kubesim.log").read_text()[-2000:])
            time.sleep(0.05)
        m = re.search(r"server:\s*(\S+)", self.kubeconfig.read_text())
        self.url = m.group(1).rstrip("/")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def call(self, method: str, path: str, body=None):
        return http(method, self.url + path, body)

    def namespace(self, name: str) -> str:
        self.call("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        return name

    def delete_jobs(self, ns: str) -> None:
        self.call("DELETE", f"/apis/batch/v1/namespaces/{ns}/jobs?propagationPolicy=Background")

    def clear_requests(self) -> None:
        self.call("DELETE", "/_sim/requests")

    def requests(self) -> list[dict]:
        _, reqs = self.call("GET", "/_sim/requests")
        return [r for r in reqs or [] if WATCH_MARK not in r.get("query", "") and "limit=99999" not in r.get("query", "")]

    def counters(self) -> dict:
        return self.call("GET", "/_sim/counters")[1] or {}

    def rss_kib(self) -> int:
        return rss_kib(self.proc.pid) if self.proc else 0


def k8s_endpoint(r: dict) -> str:
    path = r["path"]
    path = re.sub(r"/namespaces/[^/]+", "/namespaces/{ns}", path)
    path = re.sub(r"/(jobs|pods|events|secrets)/[^/]+", r"/\1/{name}", path)
    kind = "watch" if re.search(r"(^|&)watch=(1|true)", r.get("query", "")) else r["method"]
    if "follow=true" in r.get("query", ""):
        kind = "follow"
    return f"{kind} {path}"


class Watcher:
    """The driver's own watch on one kind in one namespace: first time each object was
    seen (ADDED), first time a pod was Running, when objects were deleted."""

    def __init__(self, sim: Kubesim, ns: str, kind: str):
        base = "/apis/batch/v1" if kind == "jobs" else "/api/v1"
        self.url = f"{sim.url}{base}/namespaces/{ns}/{kind}?watch=1&{WATCH_MARK}"
        self.added: dict[str, float] = {}
        self.running: dict[str, float] = {}
        self.deleted: dict[str, float] = {}
        self.completed: dict[str, float] = {}
        self.labels: dict[str, dict] = {}
        self._stop = False
        self._sock = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self._follow()
        except Exception:  # closed by stop(), or kubesim went away: the watch just ends
            if not self._stop:
                raise

    def _follow(self) -> None:
        resp = urllib.request.urlopen(self.url, timeout=86400)
        # The socket, to shut it down from stop(): closing the response would wait for
        # this thread's read.
        self._sock = resp.fp.raw._sock
        for line in resp:
            if self._stop:
                return
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            obj = ev.get("object") or {}
            name = (obj.get("metadata") or {}).get("name")
            if not name:
                continue
            now = time.time()
            self.added.setdefault(name, now)
            self.labels.setdefault(name, (obj.get("metadata") or {}).get("labels") or {})
            status = obj.get("status") or {}
            if status.get("phase") == "Running":
                self.running.setdefault(name, now)
            if any(c.get("type") == "Complete" and c.get("status") == "True" for c in status.get("conditions") or []):
                self.completed.setdefault(name, now)
            if ev.get("type") == "DELETED":
                self.deleted.setdefault(name, now)

    def stop(self) -> None:
        self._stop = True
        try:
            if self._sock is not None:
                self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.thread.join(10)


# ------------------------------------------------------------------ processes


def rss_kib(pid: int) -> int:
    """Resident memory of `pid` and its descendants, in KiB."""
    total = 0
    for p in [pid, *descendants(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU of `pid` and its live descendants (and their reaped children)."""
    hz = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in [pid, *descendants(pid)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in fields[11:15])
        except OSError:
            pass
    return total / hz


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(d.name))
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


@dataclass
class Contender:
    """How to start one worker implementation."""

    name: str  # "ours" / "python"
    argv_for: callable  # (pool, worker_name) -> argv
    env: dict

    def start(self, pool: str, work: Path, extra_env: dict | None = None) -> "Running":
        worker_name = f"bench-{self.name}-{uuid.uuid4().hex[:6]}"
        log = work / f"{worker_name}.log"
        env = {**self.env, **(extra_env or {})}
        t0 = time.time()
        proc = subprocess.Popen(self.argv_for(pool, worker_name), env=env, stdout=open(log, "wb"),
                                stderr=subprocess.STDOUT, start_new_session=True)
        return Running(self.name, proc, t0, log, worker_name)


@dataclass
class Running:
    name: str
    proc: subprocess.Popen
    started: float
    log: Path
    worker_name: str

    def rss_kib(self) -> int:
        return rss_kib(self.proc.pid)

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGINT)
                self.proc.wait(30)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(10)


def wait_until(what: str, timeout: float, probe, every: float = 0.25):
    deadline = time.time() + timeout
    while True:
        v = probe()
        if v:
            return v
        if time.time() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)
