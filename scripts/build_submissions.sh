#!/usr/bin/env bash
# Build the nips_adv Docker images (CPU and GPU, with scripts/build_images.sh: offline too) and the three
# competition archives in one go.
#
#   scripts/build_submissions.sh --checkpoint PREFIX [--model NAME] [--out DIR] [--format zip|tar|tar.gz]
#       [--image NAME] [--gpu-image NAME] [--attack-options 'OPTS'] [--targeted-options 'OPTS']
#       [--defense-options 'OPTS'] [--no-docker] [--no-gpu] [--validate]
#
# --no-docker builds only the archives (no Docker engine needed). --validate runs
# `nips-adv validate` on each archive (in the CPU image with --docker when images were built).
# Without --checkpoint the model's default checkpoint is used (as `nips-adv package` finds it).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NIPS_ADV="${NIPS_ADV:-nips-adv}"
VERSION="$("$NIPS_ADV" --version | awk '{print $NF}')"
IMAGE="nips-adv:${VERSION}"
GPU_IMAGE=""
CHECKPOINT=""
MODEL="inception_v3"
OUT="$ROOT/dist/submissions"
FORMAT="zip"
ATTACK_OPTIONS=""
TARGETED_OPTIONS=""
DEFENSE_OPTIONS=""
BUILD_DOCKER=1
BUILD_GPU=1
VALIDATE=0

usage() { sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
need_value() { if [ "$#" -lt 2 ]; then echo "build_submissions.sh: $1 needs a value" >&2; exit 2; fi; }

while [ "$#" -gt 0 ]; do
    case "$1" in
        --checkpoint) need_value "$@"; CHECKPOINT="$2"; shift 2 ;;
        --model) need_value "$@"; MODEL="$2"; shift 2 ;;
        --out) need_value "$@"; OUT="$2"; shift 2 ;;
        --format) need_value "$@"; FORMAT="$2"; shift 2 ;;
        --image) need_value "$@"; IMAGE="$2"; shift 2 ;;
        --gpu-image) need_value "$@"; GPU_IMAGE="$2"; shift 2 ;;
        --attack-options) need_value "$@"; ATTACK_OPTIONS="$2"; shift 2 ;;
        --targeted-options) need_value "$@"; TARGETED_OPTIONS="$2"; shift 2 ;;
        --defense-options) need_value "$@"; DEFENSE_OPTIONS="$2"; shift 2 ;;
        --no-docker) BUILD_DOCKER=0; shift ;;
        --no-gpu) BUILD_GPU=0; shift ;;
        --validate) VALIDATE=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "build_submissions.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$FORMAT" in zip|tar|tar.gz) ;; *) echo "build_submissions.sh: --format must be zip, tar or tar.gz" >&2; exit 2 ;; esac
if [ -z "$GPU_IMAGE" ]; then
    case "${IMAGE##*/}" in *:*) GPU_IMAGE="${IMAGE}-gpu" ;; *) GPU_IMAGE="${IMAGE}:latest-gpu" ;; esac
fi

if [ "$BUILD_DOCKER" -eq 1 ]; then
    if ! docker info > /dev/null 2>&1; then
        echo "build_submissions.sh: no Docker engine answers; use --no-docker to build only the archives" >&2
        exit 2
    fi
    GPU_FLAG=()
    if [ "$BUILD_GPU" -eq 0 ]; then GPU_FLAG=(--no-gpu); fi
    "$ROOT/scripts/build_images.sh" --image "$IMAGE" --gpu-image "$GPU_IMAGE" "${GPU_FLAG[@]}"
fi

mkdir -p "$OUT"
CHECKPOINT_ARGS=()
if [ -n "$CHECKPOINT" ]; then CHECKPOINT_ARGS=(--checkpoint "$CHECKPOINT"); fi
for TYPE in attack targeted_attack defense; do
    case "$TYPE" in
        attack) OPTIONS="$ATTACK_OPTIONS" ;;
        targeted_attack) OPTIONS="$TARGETED_OPTIONS" ;;
        defense) OPTIONS="$DEFENSE_OPTIONS" ;;
    esac
    "$NIPS_ADV" package "$TYPE" "${CHECKPOINT_ARGS[@]}" --model "$MODEL" --image "$IMAGE" --gpu-image "$GPU_IMAGE" \
        --tool-options "$OPTIONS" -o "$OUT/$TYPE.$FORMAT"
done

if [ "$VALIDATE" -eq 1 ]; then
    DOCKER_FLAG=()
    if [ "$BUILD_DOCKER" -eq 1 ]; then DOCKER_FLAG=(--docker); fi
    for TYPE in attack targeted_attack defense; do
        "$NIPS_ADV" validate "$OUT/$TYPE.$FORMAT" --type "$TYPE" "${DOCKER_FLAG[@]}"
    done
fi
echo "archives in $OUT"
