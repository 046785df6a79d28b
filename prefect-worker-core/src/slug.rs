//! python-slugify 9.x compatible slug functions (spec §3.7). STUB.
