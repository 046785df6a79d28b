//! Link options of the `prefect-worker` binary that serve its resident memory.
//!
//! On GNU/Linux the binary is linked with packed relative relocations (`DT_RELR`): a
//! position-independent executable otherwise carries about half a megabyte of
//! `R_X86_64_RELATIVE` entries in `.rela.dyn`, which the dynamic loader reads in full at
//! every start, so they stay resident. Packed, they take a few kilobytes; the image keeps
//! its address-space randomisation. Needs GNU ld ≥ 2.38 or lld ≥ 15 to link (rustc's
//! default, its bundled lld, has it) and glibc ≥ 2.36 to run: the binary then names the
//! `GLIBC_ABI_DT_RELR` version, so an older loader refuses it with a clear message instead
//! of running it half relocated (a binary linked against glibc ≥ 2.34 already needs 2.34;
//! the image's Debian bookworm has 2.36). Measured in `bench/notes.md`.

fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
