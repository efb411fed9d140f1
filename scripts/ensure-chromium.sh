#!/usr/bin/env bash
# Make sure Debian's headless-capable Chromium is at /usr/bin/chromium for the dashboard
# test (tests/e2e/test_dashboard.py drives it with Playwright; we never run
# `playwright install`: browser downloads are not allowed, Debian's package is).
# Idempotent. Installs the package when run as root; otherwise says how and carries on
# (the dashboard test then skips with the same hint).
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "chromium not found: installing Debian's chromium package with apt-get" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    chromium fonts-dejavu-core >/dev/null
  exit 0
fi
echo "warning: /usr/bin/chromium is missing, the dashboard test will skip." \
  "Install it: sudo apt-get install chromium" >&2
exit 0
