#!/bin/bash
# Defense entry point. The organisers call it from the submission folder (/code):
#   ./run_defense.sh INPUT_DIR OUTPUT_FILE
# The checkpoints ship in this folder and are passed explicitly: nothing is fetched at run time.
set -euo pipefail
if [ "$#" -ne 2 ]; then
    echo "usage: $0 INPUT_DIR OUTPUT_FILE" >&2
    exit 2
fi
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=model.env
source "$HERE/model.env"
# CHECKPOINT holds one prefix per model of MODEL, comma-separated, relative to this folder.
IFS=, read -r -a PREFIXES <<< "$CHECKPOINT"
CHECKPOINTS=""
for PREFIX in "${PREFIXES[@]}"; do CHECKPOINTS+="${CHECKPOINTS:+,}$HERE/$PREFIX"; done
exec nips-defense "$1" "$2" --model "$MODEL" --checkpoint "$CHECKPOINTS" --quiet "${TOOL_OPTIONS[@]}"
