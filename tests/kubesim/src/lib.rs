//! Simulated Kubernetes cluster. STUB.
