//! A Prefect 3 worker that runs flow runs as Kubernetes Jobs.
