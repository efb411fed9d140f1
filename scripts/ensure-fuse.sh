#!/usr/bin/env bash
# Make sure FUSE 3 (fusermount3 + libfuse3) exists for the power-cut tests
# (tests/support/powercut.py). Installs Debian's fuse3 when run as root; otherwise says how.
# Without /dev/fuse (a container without --device /dev/fuse) those tests skip with a reason,
# so a missing device is not an error here.
set -euo pipefail
if command -v fusermount3 >/dev/null 2>&1 && ldconfig -p 2>/dev/null | grep -q 'libfuse3\.so'; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "fuse3 not found: installing it with apt-get (power-cut tests)" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fuse3 libfuse3-3 >/dev/null
  exit 0
fi
echo "error: FUSE 3 is needed for the power-cut tests. Install it: sudo apt-get install fuse3 libfuse3-3" >&2
exit 1
