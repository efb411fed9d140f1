#!/usr/bin/env bash
# Make sure systemd-analyze exists (the tests verify deploy/systemd/tidegate.service with it).
# Installs Debian's systemd package when run as root; otherwise says how (tests then skip).
set -euo pipefail
if command -v systemd-analyze >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "systemd-analyze not found: installing systemd with apt-get" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null
  exit 0
fi
echo "warning: no systemd-analyze; the systemd unit tests will skip. Install it: sudo apt-get install systemd" >&2
exit 0
