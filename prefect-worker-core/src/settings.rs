//! Worker settings from flags, `PREFECT_*` environment variables and the active profile. STUB.
