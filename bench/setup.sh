#!/usr/bin/env bash
# Installs the peers the benchmark compares baton with, from Debian's packages:
#   nginx (nginx-light is enough), haproxy, Server::Starter (start_server).
# Needs root (or sudo) and apt-get. The benchmark skips any peer that is
# missing, so running this is optional; it only makes the comparison complete.
# The packages' own services are not started: the benchmark runs each peer
# itself, from a config in a temp dir, on a loopback port.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
# Keep the packages' services from starting (and from binding port 80):
# policy-rc.d exit 101 tells invoke-rc.d not to start anything.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
  $SUDO chmod +x "$policy"
  created_policy=1
fi
cleanup() {
  if [ "$created_policy" = 1 ]; then
    $SUDO rm -f "$policy"
  fi
}
trap cleanup EXIT

$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends nginx-light haproxy libserver-starter-perl

for tool in nginx haproxy start_server; do
  if command -v "$tool" >/dev/null 2>&1; then
    echo "ok: $tool -> $(command -v "$tool")"
  else
    echo "missing: $tool" >&2
    exit 1
  fi
done
nginx -v
haproxy -v | head -1
echo "start_server: Server::Starter $(perl -MServer::Starter -e 'print $Server::Starter::VERSION')"
