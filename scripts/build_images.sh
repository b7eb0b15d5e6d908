#!/usr/bin/env bash
# Build the nips_adv Docker images (CPU, and the GPU variant's tag) from the Dockerfile, online or offline.
#
#   scripts/build_images.sh [--image NAME] [--gpu-image NAME] [--no-gpu] [--stand-in]
#
# The bases are the Dockerfile's build arguments, the official images by default. A base that is
# neither on this machine nor pullable (Docker Hub out of reach) is replaced by a local stand-in:
# Debian bookworm made with debootstrap (Python 3.11, pip, the host's extra CA certificates),
# TensorFlow installed on it from PyPI. --stand-in uses the stand-ins without trying Docker Hub.
# Builds use the host's network (--network host), so pip reaches the package registries.
# Every image is checked against the organisers' 8 GiB limit. Exit 2: no engine, or a build failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$ROOT/pyproject.toml")"
TF_VERSION="2.20.0"
IMAGE="nips-adv:${VERSION}"
GPU_IMAGE=""
BUILD_GPU=1
STAND_IN=0
PYTHON_BASE="python:3.11-slim"
TF_BASE="tensorflow/tensorflow:${TF_VERSION}"
TF_GPU_BASE="tensorflow/tensorflow:${TF_VERSION}-gpu"
# Bump STAND_IN_REVISION when the stand-ins' recipe changes: a kept stand-in of an older recipe is not reused.
STAND_IN_REVISION="r2"
STAND_IN_DEBIAN="nips-adv-stand-in/debian:bookworm-${STAND_IN_REVISION}"
STAND_IN_TF="nips-adv-stand-in/tensorflow:${TF_VERSION}-${STAND_IN_REVISION}"
STAND_IN_TF_GPU="nips-adv-stand-in/tensorflow:${TF_VERSION}-gpu-${STAND_IN_REVISION}"
MAX_IMAGE_BYTES=$((8 * 1024 * 1024 * 1024))
PULL_TIMEOUT_S="${NIPS_ADV_PULL_TIMEOUT_S:-60}"

usage() { sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
fail() { echo "build_images.sh: $*" >&2; exit 2; }
need_value() { if [ "$#" -lt 2 ]; then fail "$1 needs a value"; fi; }

while [ "$#" -gt 0 ]; do
    case "$1" in
        --image) need_value "$@"; IMAGE="$2"; shift 2 ;;
        --gpu-image) need_value "$@"; GPU_IMAGE="$2"; shift 2 ;;
        --no-gpu) BUILD_GPU=0; shift ;;
        --stand-in) STAND_IN=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) fail "unknown option $1 (see --help)" ;;
    esac
done
if [ -z "$GPU_IMAGE" ]; then
    case "${IMAGE##*/}" in *:*) GPU_IMAGE="${IMAGE}-gpu" ;; *) GPU_IMAGE="${IMAGE}:latest-gpu" ;; esac
fi

docker info > /dev/null 2>&1 || fail "no Docker engine answers (docker info failed): start dockerd (scripts/docker_engine.sh start)"

BUILD_LOG="$(mktemp)"
trap 'rm -rf "$BUILD_LOG" "$BUILD_LOG".*' EXIT
# Run a command with its output in BUILD_LOG; on failure, its last lines and one line naming what failed.
logged() {
    local what="$1"
    shift
    "$@" > "$BUILD_LOG" 2>&1 || { tail -n 15 "$BUILD_LOG" >&2; fail "$what"; }
}

have_image() { docker image inspect "$1" > /dev/null 2>&1; }
pullable() { timeout "$PULL_TIMEOUT_S" docker pull --quiet "$1" > /dev/null 2>&1; }

# The stand-in for python:3.11-slim: Debian bookworm's own Python 3.11 (also as `python`, as there), pip, venv.
stand_in_debian() {
    if have_image "$STAND_IN_DEBIAN"; then return; fi
    command -v debootstrap > /dev/null || { [ "$(id -u)" = 0 ] && apt-get install -y -qq debootstrap > /dev/null; } \
        || fail "debootstrap is needed for the stand-in bases: apt-get install debootstrap"
    local rootfs="$BUILD_LOG.rootfs" started=$SECONDS
    echo "building $STAND_IN_DEBIAN with debootstrap (about a minute)"
    logged "debootstrap could not make the Debian bookworm base" \
        debootstrap --variant=minbase --include=python3,python-is-python3,python3-pip,python3-venv,ca-certificates bookworm "$rootfs"
    # Outgoing HTTPS may pass a TLS-inspecting proxy whose CA only the host knows: pip needs it inside too.
    if compgen -G "/usr/local/share/ca-certificates/*.crt" > /dev/null; then
        cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
        chroot "$rootfs" update-ca-certificates > /dev/null 2>&1
    fi
    rm -rf "$rootfs/var/cache/apt/archives/"*.deb "$rootfs/var/lib/apt/lists/"*
    tar -C "$rootfs" -c . | docker import --change 'CMD ["python3"]' - "$STAND_IN_DEBIAN" > /dev/null \
        || fail "docker import of $STAND_IN_DEBIAN failed"
    rm -rf "$rootfs"
    echo "built $STAND_IN_DEBIAN in $((SECONDS - started)) s"
}

# The stand-in for tensorflow/tensorflow:TAG: TensorFlow from PyPI on the Debian stand-in.
stand_in_tensorflow() {
    local name="$1" package="$2"
    if have_image "$name"; then return; fi
    stand_in_debian
    local started=$SECONDS
    echo "building $name: $package from PyPI on $STAND_IN_DEBIAN"
    printf 'FROM %s\nRUN PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --no-cache-dir "%s"\n' "$STAND_IN_DEBIAN" "$package" \
        > "$BUILD_LOG.Dockerfile"
    logged "could not build $name (pip install $package)" \
        env DOCKER_BUILDKIT=0 docker build --network host -t "$name" - < "$BUILD_LOG.Dockerfile"
    rm -f "$BUILD_LOG.Dockerfile"
    echo "built $name in $((SECONDS - started)) s"
}

# Echo the base to use for OFFICIAL: the official image where it is here or pullable, else the stand-in.
choose_base() {
    local official="$1" stand_in="$2" package="$3"
    if [ "$STAND_IN" -eq 0 ] && { have_image "$official" || pullable "$official"; }; then
        echo "$official"
        return
    fi
    if [ "$STAND_IN" -eq 0 ]; then
        echo "Docker Hub cannot be reached for $official: building and using the local stand-in $stand_in" >&2
    fi
    if [ "$stand_in" = "$STAND_IN_DEBIAN" ]; then stand_in_debian >&2; else stand_in_tensorflow "$stand_in" "$package" >&2; fi
    echo "$stand_in"
}

check_image_size() {
    local size
    size="$(docker image inspect --format '{{.Size}}' "$1")"
    echo "image $1: $((size / 1024 / 1024)) MiB (limit 8192 MiB)"
    [ "$size" -le "$MAX_IMAGE_BYTES" ] || fail "image $1 is over the competition's 8 GiB limit"
}

build_project_image() {
    local tag="$1" tf_base="$2" python_base="$3" started=$SECONDS
    echo "building $tag on $tf_base"
    logged "docker build of $tag failed" env DOCKER_BUILDKIT=0 docker build --network host \
        --build-arg "PYTHON_BASE=$python_base" --build-arg "TF_BASE=$tf_base" -t "$tag" "$ROOT"
    echo "built $tag in $((SECONDS - started)) s"
    check_image_size "$tag"
}

python_base="$(choose_base "$PYTHON_BASE" "$STAND_IN_DEBIAN" "")"
tf_base="$(choose_base "$TF_BASE" "$STAND_IN_TF" "tensorflow==${TF_VERSION}")"
build_project_image "$IMAGE" "$tf_base" "$python_base"
if [ "$BUILD_GPU" -eq 1 ]; then
    tf_gpu_base="$(choose_base "$TF_GPU_BASE" "$STAND_IN_TF_GPU" "tensorflow[and-cuda]==${TF_VERSION}")"
    build_project_image "$GPU_IMAGE" "$tf_gpu_base" "$python_base"
fi
