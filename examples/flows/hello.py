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
def slow(seconds: float = 8.0) -> None:
    """Runs long enough for the worker to be killed and restarted mid-run."""
    import time

    get_run_logger().info("sleeping %s seconds", seconds)
    time.sleep(seconds)
