#!/bin/bash
# Sample defense: the project's nips-defense with EfficientNet-Lite1 (weights ship with the package).
#   ./run_defense.sh INPUT_DIR OUTPUT_FILE
set -euo pipefail
exec nips-defense "$1" "$2" --model efficientnet_lite1 --quiet
