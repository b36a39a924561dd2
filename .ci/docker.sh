#!/usr/bin/env bash
# Make sure the Docker engine binaries, a static busybox and debootstrap are installed (the tests' fixture in
# tests/dockerd.py starts a private dockerd itself; no system dockerd is started here).
set -euo pipefail

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
if ! command -v busybox >/dev/null 2>&1 || ! file -L "$(command -v busybox)" 2>/dev/null | grep -q 'statically linked'; then
  missing+=(busybox-static)
fi
command -v file >/dev/null 2>&1 || missing+=(file)
# The box backup dumps the platform's database with these.
command -v mysqldump >/dev/null 2>&1 || missing+=(mariadb-client)
command -v pg_dump >/dev/null 2>&1 || missing+=(postgresql-client)
# tests/integration/test_image.py makes the image's base from Debian packages (.ci/base-image.sh).
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)

if [ ${#missing[@]} -gt 0 ]; then
  echo "docker: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
exit 0
