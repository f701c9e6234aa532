#!/usr/bin/env bash
# Installs the OCI registry the component-source tests run on 127.0.0.1:
# the CNCF distribution server, Debian's package docker-registry
# (/usr/bin/docker-registry), and htpasswd (apache2-utils) for the bcrypt
# password file of the registry that requires a login. The tests start and
# stop their own instances on free ports; the package's own service is not
# used. Idempotent; as root on a Debian-like system it installs the
# packages with apt-get.
set -euo pipefail
registry=/usr/bin/docker-registry
htpasswd=/usr/bin/htpasswd
if [ -x "$registry" ] && [ -x "$htpasswd" ]; then
    exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "installing docker-registry and apache2-utils with apt-get" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry apache2-utils >/dev/null
else
    echo "error: the component-source tests need $registry and $htpasswd (Debian packages docker-registry and apache2-utils); install them and re-run" >&2
    exit 1
fi
for bin in "$registry" "$htpasswd"; do
    [ -x "$bin" ] || { echo "error: installed, but $bin is missing" >&2; exit 1; }
done
