//! Prefect's job-template rendering, exactly (spec §3.5). STUB.
