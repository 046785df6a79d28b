//! Prefect's job-template rendering, exactly (spec §3.5).
//!
//! Not a general template engine: Prefect's grammar keeps JSON types for whole-string
//! placeholders, removes keys whose value is missing, renders partial strings with Python
//! `str()`, and never re-scans inserted text. See `docs/decisions.md`.
//!
//! - [`placeholder`]: the `{{ name }}` grammar and single-pass replacement;
//! - [`pyrepr`]: Python `str()`/`repr()` of JSON values;
//! - [`path`]: `get_from_dict` / `set_in_dict` key paths;
//! - [`apply`]: `apply_values` (job variables and `{{ $ENV }}`);
//! - [`resolve`]: the block-document and Prefect-Variable passes (the only I/O), through
//!   [`TemplateLookups`] ([`lookups`]).

pub mod apply;
pub mod lookups;
pub mod path;
pub mod placeholder;
pub mod pyrepr;
pub mod resolve;

pub use apply::{EnvSource, NoEnv, apply_values};
pub use lookups::{LookupError, MemoryLookups, TemplateLookups};
pub use path::{deep_merge, get_from_dict, get_from_map, set_in_dict, split_path};
pub use placeholder::{
    Placeholder, PlaceholderType, find_placeholders, replace_placeholders, sole_placeholder,
};
pub use pyrepr::{py_float_repr, py_repr, py_str, py_str_repr};
pub use resolve::{ResolveError, resolve_block_document_references, resolve_variables};
