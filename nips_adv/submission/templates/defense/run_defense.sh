#!/bin/bash
# Defense entry point. The organisers call it from the submission folder (/code):
#   ./run_defense.sh INPUT_DIR OUTPUT_FILE
# The checkpoint ships in this folder and is passed explicitly: nothing is fetched at run time.
set -euo pipefail
if [ "$#" -ne 2 ]; then
    echo "usage: $0 INPUT_DIR OUTPUT_FILE" >&2
    exit 2
fi
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=model.env
source "$HERE/model.env"
exec nips-defense "$1" "$2" --model "$MODEL" --checkpoint "$HERE/$CHECKPOINT" --quiet "${TOOL_OPTIONS[@]}"
