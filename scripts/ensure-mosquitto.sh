#!/usr/bin/env bash
# Make sure a mosquitto broker binary exists (tests and the demo start their own).
# Installs Debian's package when run as root; otherwise says how.
set -euo pipefail
if command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "mosquitto not found: installing it with apt-get" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto mosquitto-clients >/dev/null
  # The package may start a system broker on 1883; tests never use it.
  exit 0
fi
echo "error: the 'mosquitto' binary is needed. Install it: sudo apt-get install mosquitto mosquitto-clients" >&2
exit 1
