#!/usr/bin/env python3
"""A stand-in for `prefect flow-run execute` in the chaos tests: it reports states the way
Prefect's engine does (Running, then a final state) through the REST API, with nothing but
the standard library, so hundreds of runs cost milliseconds of CPU each instead of seconds.

Usage (as a Job's command): fake_engine.py MODE
  complete      Running, then Completed, exit 0
  fail          Running, then Failed, exit 1 (the flow raised: the worker adds nothing)
  exit:N        Running, then exit N without a final state (the worker reports Crashed)
  sleep:S       Running, sleep S seconds, then Completed (cancel such runs while they sleep)
  sleep-exit:S:N  Running, sleep S seconds, then exit N without a final state

Like the real engine it rides out API outages (connection errors, 5xx, 429) for up to
CHAOS_ENGINE_PATIENCE seconds (default 300), and exits quietly when the server refuses
Running (the run was cancelled or is already final).
"""
import json
import os
import sys
import time
import urllib.error
import urllib.request

API = os.environ["PREFECT_API_URL"].rstrip("/")
RUN = os.environ["PREFECT__FLOW_RUN_ID"]
PATIENCE = float(os.environ.get("CHAOS_ENGINE_PATIENCE", "300"))
HEADERS = {"Content-Type": "application/json"}
if os.environ.get("PREFECT_API_KEY"):
    HEADERS["Authorization"] = "Bearer " + os.environ["PREFECT_API_KEY"]


def propose(state_type, name):
    body = json.dumps({"state": {"type": state_type, "name": name}, "force": False}).encode()
    deadline = time.monotonic() + PATIENCE
    while True:
        req = urllib.request.Request(
            f"{API}/flow_runs/{RUN}/set_state", data=body, headers=HEADERS, method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                result = json.load(resp)
            if result.get("status") == "WAIT":
                time.sleep(min(float(result.get("details", {}).get("delay_seconds") or 1), 5))
                continue
            return result
        except urllib.error.HTTPError as e:
            if e.code < 500 and e.code != 429:
                raise
        except (urllib.error.URLError, OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"fake engine: the API did not answer for {PATIENCE} s")
        time.sleep(0.5)


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "complete"
    running = propose("RUNNING", "Running")
    if running.get("status") != "ACCEPT":
        print(f"fake engine: Running refused: {running.get('details')}")
        return 0
    print("fake engine: running", mode, flush=True)
    if mode.startswith("sleep-exit:"):
        _, secs, code = mode.split(":")
        time.sleep(float(secs))
        mode = "exit:" + code
    if mode.startswith("sleep:"):
        time.sleep(float(mode.split(":", 1)[1]))
        mode = "complete"
    if mode == "complete":
        propose("COMPLETED", "Completed")
        print("fake engine: completed", flush=True)
        return 0
    if mode == "fail":
        propose("FAILED", "Failed")
        print("fake engine: the flow failed", flush=True)
        return 1
    if mode.startswith("exit:"):
        print("fake engine: exiting without a final state", flush=True)
        return int(mode.split(":", 1)[1])
    raise SystemExit(f"fake engine: unknown mode {mode!r}")


if __name__ == "__main__":
    sys.exit(main())
