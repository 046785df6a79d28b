//! Prefect server test harness. STUB.
