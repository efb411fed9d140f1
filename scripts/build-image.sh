#!/usr/bin/env bash
# Build the tidegate image for one platform from wheels prepared on this host.
#
#   scripts/build-image.sh [--platform linux/amd64|linux/arm64|linux/arm/v7]
#                          [--base IMAGE] [--tag NAME] [--extras fast|none] [--python 3.11]
#
# 1. builds tidegate's own wheel (pure Python) from this checkout;
# 2. downloads every dependency as a wheel for the *target* platform
#    (pip download --platform manylinux_…_<arch> --only-binary=:all:), so nothing is
#    compiled or fetched inside the image — the way air-gapped Raspberry Pi installs work;
# 3. stages those wheels and config.toml in build/image-context/<arch>-<tag>/ and runs
#    docker build -f docker/Dockerfile --platform <platform> … on that small context.
#
# Defaults: the Docker engine's own platform; base $TIDEGATE_BASE_IMAGE or python:3.11-slim
# (the official image); tag $TIDEGATE_IMAGE or tidegate:latest (what compose runs); extras "fast" (uvloop) where PyPI has a uvloop wheel for the
# platform (amd64, arm64) and none on linux/arm/v7, where it would need a compiler.
# Another platform than the engine's runs under qemu-user-static (binfmt_misc).
set -euo pipefail
cd "$(dirname "$0")/.."

PLATFORM=""
BASE="${TIDEGATE_BASE_IMAGE:-}"
TAG="${TIDEGATE_IMAGE:-tidegate:latest}"
EXTRAS=""
PYVER="3.11"
while [ $# -gt 0 ]; do
  case "$1" in
    --platform) PLATFORM="$2"; shift 2 ;;
    --base) BASE="$2"; shift 2 ;;
    --tag) TAG="$2"; shift 2 ;;
    --extras) EXTRAS="$2"; shift 2 ;;
    --python) PYVER="$2"; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

if [ -z "$PLATFORM" ]; then
  case "$(docker version --format '{{.Server.Arch}}' 2>/dev/null || uname -m)" in
    amd64|x86_64) PLATFORM=linux/amd64 ;;
    arm64|aarch64) PLATFORM=linux/arm64 ;;
    arm|armv7l|armhf) PLATFORM=linux/arm/v7 ;;
    *) echo "error: cannot tell the platform: pass --platform" >&2; exit 2 ;;
  esac
fi
case "$PLATFORM" in
  linux/amd64) WHEEL_ARCH=x86_64; SLUG=amd64; DEFAULT_EXTRAS=fast ;;
  linux/arm64|linux/arm64/v8) WHEEL_ARCH=aarch64; SLUG=arm64; DEFAULT_EXTRAS=fast ;;
  linux/arm/v7|linux/arm) WHEEL_ARCH=armv7l; SLUG=armv7; DEFAULT_EXTRAS=none ;;
  *) echo "error: --platform must be linux/amd64, linux/arm64 or linux/arm/v7 (got '$PLATFORM')" >&2; exit 2 ;;
esac
EXTRAS="${EXTRAS:-$DEFAULT_EXTRAS}"
case "$EXTRAS" in
  none) REQ_EXTRAS="" ;;
  fast) REQ_EXTRAS="[fast]" ;;
  *) echo "error: --extras must be fast or none (got '$EXTRAS')" >&2; exit 2 ;;
esac
case "$PYVER" in
  3.1[1-9]) ;;
  *) echo "error: --python must be the base image's Python, 3.11 or newer (got '$PYVER')" >&2; exit 2 ;;
esac

if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY="${PYTHON:-python3}"; fi
if ! "$PY" -m pip --version >/dev/null 2>&1; then
  echo "error: $PY has no pip. Install it: sudo apt-get install python3-pip (or run make venv)" >&2
  exit 1
fi
PIP=("$PY" -m pip --disable-pip-version-check)

# One context per platform and tag: builds of different tags may run side by side.
CONTEXT="build/image-context/$SLUG-${TAG//[^A-Za-z0-9_.-]/_}"
rm -rf "$CONTEXT"
mkdir -p "$CONTEXT/wheels"
cp config.toml "$CONTEXT/config.toml"

# tidegate's own wheel, from a clean copy of what the distribution contains: setuptools
# reuses ./build/lib (a stale module could ship) and two builds must not share it.
SRC="$(mktemp -d)"
trap 'rm -rf "$SRC"' EXIT
cp -r pyproject.toml README.md gateway simulators "$SRC/"
find "$SRC" -name __pycache__ -prune -exec rm -rf {} +
if ! "${PIP[@]}" wheel --no-deps --wheel-dir "$CONTEXT/wheels" "$SRC" >"$CONTEXT/pip-wheel.log" 2>&1; then
  cat "$CONTEXT/pip-wheel.log" >&2
  echo "error: building tidegate's wheel failed (above)" >&2
  exit 1
fi
WHEEL="$(ls "$CONTEXT"/wheels/tidegate-*.whl)"

# Every glibc manylinux tag up to Debian bookworm's glibc 2.36, plus the legacy alias.
TAGS=(--platform "manylinux2014_$WHEEL_ARCH")
for minor in $(seq 17 36); do TAGS+=(--platform "manylinux_2_${minor}_$WHEEL_ARCH"); done
NODOT="${PYVER/./}"
if ! "${PIP[@]}" download --quiet --dest "$CONTEXT/wheels" --only-binary=:all: \
    --implementation cp --python-version "$PYVER" --abi "cp$NODOT" "${TAGS[@]}" \
    "$WHEEL$REQ_EXTRAS" >"$CONTEXT/pip-download.log" 2>&1; then
  grep -v '^WARNING: Location' "$CONTEXT/pip-download.log" >&2 || true
  echo "error: a dependency has no $WHEEL_ARCH wheel for CPython $PYVER on PyPI (above)." >&2
  [ "$EXTRAS" = fast ] && echo "       try --extras none (uvloop is optional)" >&2
  exit 1
fi

# pip itself, to run from its wheel inside the build (never installed in the image).
if ! "${PIP[@]}" download --quiet --dest "$CONTEXT/wheels/pip" --only-binary=:all: --no-deps \
    pip >>"$CONTEXT/pip-download.log" 2>&1; then
  grep -v '^WARNING: Location' "$CONTEXT/pip-download.log" >&2 || true
  echo "error: could not download pip's wheel (above)" >&2
  exit 1
fi

echo "build-image: $PLATFORM, $(ls "$CONTEXT"/wheels/*.whl | wc -l) wheels ($(du -sh "$CONTEXT/wheels" | cut -f1)), extras=$EXTRAS, base=${BASE:-python:$PYVER-slim} -> $TAG" >&2
BUILD_ARGS=(--build-arg "BASE_IMAGE=${BASE:-python:$PYVER-slim}")
if ! docker build --platform "$PLATFORM" "${BUILD_ARGS[@]}" \
    --file docker/Dockerfile --tag "$TAG" "$CONTEXT" >"$CONTEXT/docker-build.log" 2>&1; then
  tail -30 "$CONTEXT/docker-build.log" >&2
  echo "error: docker build failed (full log: $CONTEXT/docker-build.log)" >&2
  exit 1
fi
# The legacy builder keeps the install stage as an untagged image (wheels and all):
# drop those of ours, so repeated builds do not pile them up.
docker image prune --force --filter label=io.tidegate.build-stage=install >/dev/null 2>&1 || true
docker image inspect --format '{{.Size}}' "$TAG" | awk -v t="$TAG" '{printf "build-image: %s is %.1f MB\n", t, $1/1e6}' >&2
