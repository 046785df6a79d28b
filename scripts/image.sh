#!/usr/bin/env bash
# Builds the worker's container image from ./Dockerfile.
#
# Usage: scripts/image.sh [--tag TAG] [--stand-ins] [--stand-ins-only]
#
# With a registry, this is just
#     docker build -t prefect-worker-rs:dev .
# (the Dockerfile's defaults are the official `rust` and `debian:bookworm-slim`
# images). Without one (this project's machines reach no image registry),
# --stand-ins makes local stand-ins for both bases and builds on them:
# debootstrap a Debian bookworm into .cache/image/ (git-ignored), `docker import`
# it as stand-in/debian:bookworm-slim, and a second one with gcc and this
# machine's Rust toolchain as stand-in/rust:bookworm. Without the flag the
# stand-ins are used only when an official base is neither present nor pullable.
# The Debian mirror is the one apt uses here (DEBIAN_MIRROR overrides it).
# Cargo fetches crates during the build (`--network host`).
#
# Needs a running Docker engine (here: `dockerd --storage-driver vfs
# --iptables=false --bridge=none &`), debootstrap for the stand-ins, and root.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${repo_root}"

tag="prefect-worker-rs:dev"
stand_ins="auto"
only_stand_ins=false
while [[ $# -gt 0 ]]; do
    case "$1" in
        --tag) tag="$2"; shift 2 ;;
        --stand-ins) stand_ins="yes"; shift ;;
        --stand-ins-only) stand_ins="yes"; only_stand_ins=true; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

log() { printf '[image] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

official_rust="rust:1.95-bookworm"
official_runtime="debian:bookworm-slim"
# The tag names what the stand-in holds: a new package list gets a new tag (and bootstrap).
stand_in_rust="stand-in/rust:bookworm-make"
stand_in_runtime="stand-in/debian:bookworm-slim"
cache="${repo_root}/.cache/image"

docker info >/dev/null 2>&1 || die "no Docker engine: start one (e.g. dockerd --storage-driver vfs --iptables=false --bridge=none &)"

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

debian_mirror() {
    if [[ -n "${DEBIAN_MIRROR:-}" ]]; then
        echo "${DEBIAN_MIRROR}"
        return
    fi
    # The first `debian` (not -security) URI apt is configured with.
    local uri
    uri="$(grep -hoE '^(URIs:[[:space:]]*|deb[[:space:]]+)[^[:space:]]+/debian/?([[:space:]]|$)' \
        /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null \
        | head -n1 | awk '{print $NF}')"
    [[ -n "${uri}" ]] || die "cannot find a Debian mirror in apt's sources; set DEBIAN_MIRROR"
    echo "${uri}"
}

# debootstrap SUITE into DIR once (minbase plus INCLUDE packages).
bootstrap() {
    local dir="$1" include="$2"
    if [[ -f "${dir}/.complete" && "$(cat "${dir}/.complete")" == "${include}" ]]; then
        log "reusing ${dir}"
        return
    fi
    command -v debootstrap >/dev/null || die "debootstrap is needed for the stand-ins (apt-get install debootstrap)"
    rm -rf "${dir}"
    mkdir -p "${dir}"
    log "debootstrap bookworm into ${dir} (include: ${include:-none})"
    debootstrap --variant=minbase ${include:+--include="${include}"} bookworm "${dir}" "$(debian_mirror)" >&2
    # A slim image keeps no package lists or caches.
    rm -rf "${dir}"/var/lib/apt/lists/* "${dir}"/var/cache/apt/*.bin "${dir}"/var/cache/apt/archives/*.deb
    # apt inside the image uses the same mirror as the bootstrap.
    echo "deb $(debian_mirror) bookworm main" > "${dir}/etc/apt/sources.list"
    echo "${include}" > "${dir}/.complete"
}

make_stand_ins() {
    local t0
    t0="$(date +%s)"
    if ! have_image "${stand_in_runtime}"; then
        bootstrap "${cache}/debian-slim" ""
        log "importing ${stand_in_runtime}"
        tar -C "${cache}/debian-slim" --exclude=./.complete -c . \
            | docker import --change 'CMD ["bash"]' - "${stand_in_runtime}" >/dev/null
    fi
    if ! have_image "${stand_in_rust}"; then
        # make: jemalloc's C build (the binary's allocator).
        bootstrap "${cache}/rust" "gcc,libc6-dev,make,ca-certificates,pkg-config"
        local sysroot
        sysroot="$(rustc --print sysroot)"
        log "copying this machine's Rust toolchain (${sysroot}) into the rust stand-in"
        rm -rf "${cache}/rust/usr/local/rustup" "${cache}/rust/usr/local/cargo"
        mkdir -p "${cache}/rust/usr/local/rustup/toolchains" "${cache}/rust/usr/local/cargo/bin"
        cp -a "${sysroot}" "${cache}/rust/usr/local/rustup/toolchains/stand-in"
        rm -rf "${cache}/rust/usr/local/rustup/toolchains/stand-in/share/doc"
        # Trust what this machine trusts: a TLS-intercepting proxy may stand between it
        # and crates.io, with its CA in the host's bundle only.
        if [[ -f /etc/ssl/certs/ca-certificates.crt ]]; then
            cp /etc/ssl/certs/ca-certificates.crt "${cache}/rust/etc/ssl/certs/ca-certificates.crt"
        fi
        for b in cargo rustc rustdoc; do
            ln -sf "/usr/local/rustup/toolchains/stand-in/bin/${b}" "${cache}/rust/usr/local/cargo/bin/${b}"
        done
        log "importing ${stand_in_rust}"
        tar -C "${cache}/rust" --exclude=./.complete -c . \
            | docker import \
                --change 'ENV RUSTUP_HOME=/usr/local/rustup' \
                --change 'ENV CARGO_HOME=/usr/local/cargo' \
                --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
                --change 'CMD ["bash"]' - "${stand_in_rust}" >/dev/null
    fi
    log "stand-ins ready in $(( $(date +%s) - t0 )) s: ${stand_in_rust}, ${stand_in_runtime}"
}

rust_image="${official_rust}"
runtime_image="${official_runtime}"
if [[ "${stand_ins}" == "auto" ]]; then
    if { have_image "${official_rust}" || docker pull -q "${official_rust}" >/dev/null 2>&1; } \
        && { have_image "${official_runtime}" || docker pull -q "${official_runtime}" >/dev/null 2>&1; }; then
        stand_ins="no"
    else
        log "the official base images cannot be pulled: building on local stand-ins"
        stand_ins="yes"
    fi
fi
if [[ "${stand_ins}" == "yes" ]]; then
    make_stand_ins
    rust_image="${stand_in_rust}"
    runtime_image="${stand_in_runtime}"
fi
${only_stand_ins} && exit 0

version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
created="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
log "building ${tag} (version ${version}, revision ${revision:0:12}) on ${rust_image} / ${runtime_image}"
t0="$(date +%s)"
docker build --network host \
    --build-arg "RUST_IMAGE=${rust_image}" \
    --build-arg "RUNTIME_IMAGE=${runtime_image}" \
    --build-arg "VERSION=${version}" \
    --build-arg "REVISION=${revision}" \
    --build-arg "CREATED=${created}" \
    -t "${tag}" .
log "built ${tag} in $(( $(date +%s) - t0 )) s"
docker image inspect "${tag}" --format 'size: {{.Size}} bytes; user: {{.Config.User}}; entrypoint: {{json .Config.Entrypoint}}; exposed: {{json .Config.ExposedPorts}}' >&2
docker run --rm --read-only --user 1001:1001 "${tag}" prefect-worker --version
