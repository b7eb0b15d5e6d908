#!/bin/bash
# Sample non-targeted attack that changes nothing: copies every input image to the output.
#   ./run_attack.sh INPUT_DIR OUTPUT_DIR MAX_EPSILON
set -euo pipefail
mkdir -p "$2"
cp "$1"/*.png "$2"/
