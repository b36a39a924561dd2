#!/usr/bin/env bash
# Make sure a compose CLI is there for tests/unit/test_compose.py (`docker compose config`):
# the compose plugin when present, else Debian's docker-compose.
set -euo pipefail
if docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1; then
  exit 0
fi
echo "compose: installing docker-compose"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq docker-compose >/dev/null
