#!/bin/sh
# The image's entrypoint, at /opt/prefect/entrypoint.sh as in Prefect's images (the
# prefect-worker Helm chart runs `/usr/bin/tini -g -- /opt/prefect/entrypoint.sh
# prefect worker start ...`). It runs its arguments and nothing else: this image has
# no Python, so EXTRA_PIP_PACKAGES and the like install nothing.
set -e

if [ -n "${EXTRA_PIP_PACKAGES:-}" ]; then
    echo "entrypoint: EXTRA_PIP_PACKAGES is ignored: this image is the Rust Kubernetes worker and installs nothing" >&2
fi

if [ "$#" -eq 0 ]; then
    exec prefect-worker --help
fi
exec "$@"
