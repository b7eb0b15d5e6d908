#!/bin/bash
# Sample defense: EfficientNet-Lite1 as a plain classifier (--plain: no defense recipe; weights ship with the package).
#   ./run_defense.sh INPUT_DIR OUTPUT_FILE
set -euo pipefail
exec nips-defense "$1" "$2" --model efficientnet_lite1 --plain --quiet
