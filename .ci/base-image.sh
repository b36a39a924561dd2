#!/usr/bin/env bash
# Make a root filesystem for compose/Dockerfile's BASE from Debian packages (no registry needed):
# debootstrap minbase + python3 and its venv module, written as one tar for `docker import`.
#
#   bash .ci/base-image.sh OUT.tar [SUITE]      # SUITE: trixie (default; Python 3.13)
#
# Bookworm's python3 is 3.11.2, older than the 3.11.4 boxtasks needs (tarfile filters): trixie it is.
# Slow (minutes): callers keep OUT.tar and reuse it; an existing OUT.tar is left alone.
set -euo pipefail
out=${1:?usage: base-image.sh OUT.tar [SUITE]}
suite=${2:-trixie}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
[ -s "$out" ] && exit 0
command -v debootstrap >/dev/null 2>&1 || {
  echo "base-image: installing debootstrap"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq debootstrap >/dev/null
}
mkdir -p "$(dirname "$out")"
root=$(mktemp -d /tmp/boxtasks-base.XXXXXX)
trap 'rm -rf "$root" "${part:-}"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates "$suite" "$root" "$mirror" >"$root.log" 2>&1 \
  || { tail -30 "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"
chmod 755 "$root"  # mktemp made it 0700: it becomes the image's /, which every user must traverse
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* "$root"/usr/share/man/*
part=$(mktemp "$out.XXXXXX")  # two runs at once each write their own, and the last rename wins whole
tar -C "$root" --numeric-owner -cf "$part" .
chmod 644 "$part"
mv "$part" "$out"
