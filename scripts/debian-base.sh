#!/usr/bin/env bash
# Make (or reuse) a minimal Debian bookworm base image with Debian's python3, for one
# platform, without any image registry: debootstrap --variant=minbase, then an image
# FROM scratch with that tree (docker import, with the right platform label).
#
#   scripts/debian-base.sh amd64|arm64|armv7      # prints the image name on stdout
#
# Cached twice: in the Docker engine (image tidegate-base:bookworm-<arch>-v1i2) and as a
# tarball under $TIDEGATE_IMAGE_CACHE (default ~/.cache/tidegate/images), so a new engine
# or a pruned one imports it in seconds instead of bootstrapping again (≈ 45 s for amd64,
# a few minutes for arm64/armv7 under qemu-user-static). Needs root for debootstrap.
# Bump RECIPE when what goes into the base changes.
set -euo pipefail
RECIPE=v1
IMAGE_RECIPE=i2  # how the tarball becomes an image (bump to re-import)
SUITE=bookworm
MIRROR="${TIDEGATE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
case "${1:-}" in
  amd64) DEB_ARCH=amd64; PLATFORM=linux/amd64 ;;
  arm64) DEB_ARCH=arm64; PLATFORM=linux/arm64 ;;
  armv7) DEB_ARCH=armhf; PLATFORM=linux/arm/v7 ;;
  *) echo "usage: $0 amd64|arm64|armv7" >&2; exit 2 ;;
esac
NAME="tidegate-base:$SUITE-$1-$RECIPE$IMAGE_RECIPE"
CACHE="${TIDEGATE_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tidegate/images}"
TARBALL="$CACHE/debian-$SUITE-$1-$RECIPE.tar.gz"

if docker image inspect "$NAME" >/dev/null 2>&1; then
  echo "$NAME"
  exit 0
fi

# Not `docker import --platform`: Debian's docker.io 20.10 ignores the platform there and
# labels every import amd64, which the legacy builder then refuses in COPY --from. A
# FROM scratch build with --platform labels the image right, from the same tarball.
import_tarball() {
  local context
  context="$(mktemp -d)"
  ln "$TARBALL" "$context/rootfs.tar.gz" 2>/dev/null || cp "$TARBALL" "$context/rootfs.tar.gz"
  printf 'FROM scratch\nADD rootfs.tar.gz /\nLABEL org.opencontainers.image.description=%s\nCMD ["/bin/bash"]\n' \
    "debootstrap-$SUITE-minbase-python3-$RECIPE" >"$context/Dockerfile"
  if ! docker build --quiet --platform "$PLATFORM" --tag "$NAME" "$context" >"$context/build.log" 2>&1; then
    cat "$context/build.log" >&2
    rm -rf "$context"
    echo "debian-base: importing $TARBALL failed" >&2
    exit 1
  fi
  rm -rf "$context"
}

if [ -s "$TARBALL" ]; then
  import_tarball
  echo "$NAME"
  exit 0
fi

if [ "$(id -u)" != "0" ]; then
  echo "debian-base: making $NAME needs root (debootstrap): sudo $0 $1" >&2
  exit 3
fi
mkdir -p "$CACHE"
ROOTFS="$(mktemp -d "$CACHE/rootfs-$1.XXXXXX")"
trap 'rm -rf "$ROOTFS"' EXIT
started=$(date +%s)
echo "debian-base: debootstrap $SUITE ($DEB_ARCH) into $ROOTFS — once; cached as $TARBALL" >&2
if ! debootstrap --variant=minbase --arch="$DEB_ARCH" --include=python3-venv \
    "$SUITE" "$ROOTFS" "$MIRROR" >"$ROOTFS.log" 2>&1; then
  tail -20 "$ROOTFS.log" >&2
  echo "debian-base: debootstrap failed (full log: $ROOTFS.log)" >&2
  exit 1
fi
rm -f "$ROOTFS.log"

# Slim like Debian's own container images: no docs, man pages, locales or apt caches,
# now and for packages installed later in derived images.
cat >"$ROOTFS/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
cat >"$ROOTFS/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
APT::Install-Recommends "false";
Acquire::Languages "none";
EOF
rm -rf "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/cache/apt/archives/*.deb \
  "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/*
find "$ROOTFS/usr/share/doc" -mindepth 2 ! -name copyright ! -type d -delete
find "$ROOTFS/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +

tar -C "$ROOTFS" --numeric-owner -c . | gzip -1 >"$TARBALL.tmp"
mv "$TARBALL.tmp" "$TARBALL"
import_tarball
echo "debian-base: $NAME ready in $(($(date +%s) - started)) s" >&2
echo "$NAME"
