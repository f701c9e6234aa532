#!/usr/bin/env bash
# Installs the NATS server the store tests run (crates/tessera-store/tests):
# Debian's package nats-server (/usr/sbin/nats-server). The tests start and
# stop their own instances, with JetStream, on free loopback ports; the
# package's own service is not used. Idempotent: does nothing when the
# binary is already there. Installs with apt-get, as root or through sudo.
set -euo pipefail
if [ -x /usr/sbin/nats-server ] || command -v nats-server >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: the store tests need nats-server (2.9 or newer, with JetStream); install it and re-run" >&2
    exit 1
fi
if [ "$(id -u)" = 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
else
    echo "error: the store tests need nats-server (Debian package nats-server); run this script as root, or install sudo" >&2
    exit 1
fi
echo "installing nats-server with apt-get" >&2
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server >/dev/null
if ! [ -x /usr/sbin/nats-server ] && ! command -v nats-server >/dev/null 2>&1; then
    echo "error: installed, but nats-server is missing" >&2
    exit 1
fi
