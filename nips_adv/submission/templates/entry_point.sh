#!/bin/bash
# @TRACK@ entry point. The organisers call it from the submission folder (/code):
#   ./@ENTRY_POINT@ @ARGUMENTS@
# The checkpoints ship in this folder and are passed explicitly: nothing is fetched at run time.
set -euo pipefail
if [ "$#" -ne @ARGUMENT_COUNT@ ]; then
    echo "usage: $0 @ARGUMENTS@" >&2
    exit 2
fi
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=model.env
source "$HERE/model.env"
# CHECKPOINT holds one prefix per model of MODEL, comma-separated, relative to this folder.
IFS=, read -r -a PREFIXES <<< "$CHECKPOINT"
CHECKPOINTS=""
for PREFIX in "${PREFIXES[@]}"; do CHECKPOINTS+="${CHECKPOINTS:+,}$HERE/$PREFIX"; done
exec @TOOL@ "$@" --model "$MODEL" --checkpoint "$CHECKPOINTS" --quiet "${TOOL_OPTIONS[@]}"
