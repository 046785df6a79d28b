"""The reference for `configuration::json_diff` and `check_job_manifest`: the jsonpatch that
Prefect 3.9.1 installs (the repo's venv), and prefect-kubernetes' Job manifest validation
built on it. Reads {"manifests": [...], "pairs": [[src, dst], ...]} on stdin; writes
{"verdicts": ["OK" or the error text, ...], "diffs": [[[op, path, from], ...], ...]}."""

import json
import sys

from jsonpatch import JsonPatch

REQUIRED = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "metadata": {"annotations": {}, "labels": {}},
    "spec": {
        "template": {
            "spec": {
                "parallelism": 1,
                "completions": 1,
                "restartPolicy": "Never",
                "containers": [{"name": "prefect-job"}],
            }
        }
    },
}


def verdict(manifest):
    ops = list(JsonPatch.from_diff(manifest, REQUIRED))
    missing = sorted(op["path"] for op in ops if op["op"] == "add")
    if missing:
        return "Job is missing required attributes at the following paths: " + ", ".join(missing)
    wrong = sorted(f"{op['path']} must have value {op['value']!r}" for op in ops if op["op"] == "replace")
    if wrong:
        return "Job has incompatible values for the following attributes: " + ", ".join(wrong)
    return "OK"


def operations(src, dst):
    return [[op["op"], op["path"], op.get("from")] for op in JsonPatch.from_diff(src, dst)]


request = json.load(sys.stdin)
json.dump(
    {
        "verdicts": [verdict(m) for m in request["manifests"]],
        "diffs": [operations(src, dst) for src, dst in request["pairs"]],
    },
    sys.stdout,
)
