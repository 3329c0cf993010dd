#!/usr/bin/env bash
# Builds the container image's two targets and checks them end to end: scripts/image_test.py says what it checks.
# As root on Debian; installs podman, mmdebstrap, runc and slirp4netns when missing (podman builds by itself,
# so no buildah). Its podman store, the stand-in base and the build cache stay in HEPGG_IMAGE_TEST_DIR (default
# .image-test in the checkout): the second run reuses them. Options: --work-dir, --ca FILE (the build secret
# `ca`; default the system CA bundle), --grace SECONDS.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ] || [ ! -f /etc/debian_version ]; then
  echo "image-test: needs root on Debian (rootful podman, apt)" >&2
  exit 2
fi
packages=(podman mmdebstrap runc slirp4netns)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

exec "${HEPGG_IMAGE_TEST_PYTHON:-.venv/bin/python}" scripts/image_test.py "$@"
