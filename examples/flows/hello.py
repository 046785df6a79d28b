"""The demo flow: runs inside a (simulated) Kubernetes Job started by prefect-worker."""

from prefect import flow, get_run_logger


@flow(log_prints=True)
def hello(name: str = "world") -> str:
    logger = get_run_logger()
    logger.info("Hello, %s! This flow runs in a Kubernetes Job started by prefect-worker.", name)
    print("The answer is 42")
    return f"Hello, {name}!"


@flow
def fails() -> None:
    raise RuntimeError("this flow fails on purpose")


@flow
def waits_for(release_file: str, timeout_seconds: float = 600.0) -> None:
    """Runs until `release_file` exists, so a test can restart the worker mid-run and end
    the run when it has seen what it needs (a condition, not a guess at a duration)."""
    import os
    import time

    logger = get_run_logger()
    logger.info("waiting for %s", release_file)
    deadline = time.monotonic() + timeout_seconds
    while not os.path.exists(release_file):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{release_file} did not appear within {timeout_seconds} s")
        time.sleep(0.1)
    logger.info("released")
