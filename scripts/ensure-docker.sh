#!/usr/bin/env bash
# Make sure a Docker engine answers, for the tests that build and run images.
#
#   scripts/ensure-docker.sh [--emulation] [--compose]
#
# Installs what is missing from Debian's packages when run as root (docker.io, and
# debootstrap, which makes the local base images since no registry may be reachable),
# then starts dockerd in the background if no engine answers (as root; its log goes to
# /var/log/tidegate-dockerd.log). --emulation adds qemu-user-static + binfmt-support and
# registers them with binfmt_misc, so arm64 and armv7 containers run; --compose makes sure
# `docker compose` or Debian's `docker-compose` exists.
# Exit 0 when everything asked for is ready; 3 with one line on stderr saying what is
# missing and the command that fixes it (the tests turn that into a skip with the reason).
set -euo pipefail
EMULATION=0
COMPOSE=0
for arg in "$@"; do
  case "$arg" in
    --emulation) EMULATION=1 ;;
    --compose) COMPOSE=1 ;;
    *) echo "usage: $0 [--emulation] [--compose]" >&2; exit 2 ;;
  esac
done
ROOT=0
[ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1 && ROOT=1

need=()
# The engine, not only a client: a machine may have a docker CLI (e.g. /usr/local/bin/docker)
# and no dockerd, and a client alone cannot run the image tests.
if ! docker info >/dev/null 2>&1 && ! command -v dockerd >/dev/null 2>&1; then
  need+=(docker.io)
fi
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
if [ "$EMULATION" = 1 ]; then
  [ -e /usr/libexec/qemu-binfmt/aarch64-binfmt-P ] || [ -x /usr/bin/qemu-aarch64-static ] || need+=(qemu-user-static)
  command -v update-binfmts >/dev/null 2>&1 || need+=(binfmt-support)
fi
if [ "$COMPOSE" = 1 ] && ! docker compose version >/dev/null 2>&1 \
    && ! command -v docker-compose >/dev/null 2>&1; then
  need+=(docker-compose)
fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "$ROOT" = 1 ]; then
    echo "ensure-docker: installing ${need[*]} with apt-get" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "ensure-docker: missing ${need[*]}: sudo apt-get install ${need[*]}" >&2
    exit 3
  fi
fi

if ! docker info >/dev/null 2>&1; then
  if [ "$(id -u)" != "0" ]; then
    if [ -S /var/run/docker.sock ] && [ ! -w /var/run/docker.sock ]; then
      echo "ensure-docker: no access to /var/run/docker.sock: sudo usermod -aG docker $(id -un) (then log in again)" >&2
    else
      echo "ensure-docker: no Docker engine answers and only root can start one: sudo dockerd &" >&2
    fi
    exit 3
  fi
  if ! command -v dockerd >/dev/null 2>&1; then
    echo "ensure-docker: a docker client but no dockerd: sudo apt-get install docker.io" >&2
    exit 3
  fi
  echo "ensure-docker: starting dockerd (log: /var/log/tidegate-dockerd.log)" >&2
  setsid dockerd >>/var/log/tidegate-dockerd.log 2>&1 < /dev/null &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 0.5
  done
  if ! docker info >/dev/null 2>&1; then
    echo "ensure-docker: dockerd did not answer within 30 s: see the end of /var/log/tidegate-dockerd.log" >&2
    exit 3
  fi
fi

if [ "$EMULATION" = 1 ]; then
  binfmt=/proc/sys/fs/binfmt_misc
  if [ ! -e "$binfmt/status" ]; then
    if [ "$(id -u)" = "0" ]; then
      mount -t binfmt_misc binfmt_misc "$binfmt" 2>/dev/null || true
    fi
  fi
  for interpreter in qemu-aarch64 qemu-arm; do
    if ! grep -qs '^enabled' "$binfmt/$interpreter"; then
      [ "$(id -u)" = "0" ] && update-binfmts --enable "$interpreter" >/dev/null 2>&1 || true
    fi
    if ! grep -qs '^enabled' "$binfmt/$interpreter"; then
      echo "ensure-docker: $interpreter is not registered with binfmt_misc: sudo update-binfmts --enable $interpreter" >&2
      exit 3
    fi
    # F (fix binary): the kernel opens the interpreter at registration, so it also
    # works inside containers that do not have it.
    if ! grep -qs '^flags: .*F' "$binfmt/$interpreter"; then
      echo "ensure-docker: $interpreter lacks the F flag (install qemu-user-static, not qemu-user)" >&2
      exit 3
    fi
  done
fi
exit 0
