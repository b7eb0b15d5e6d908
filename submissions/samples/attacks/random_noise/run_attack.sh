#!/bin/bash
# Sample non-targeted attack: adds random +-MAX_EPSILON sign noise to every image.
#   ./run_attack.sh INPUT_DIR OUTPUT_DIR MAX_EPSILON
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec python3 "$HERE/random_noise.py" "$1" "$2" "$3"
