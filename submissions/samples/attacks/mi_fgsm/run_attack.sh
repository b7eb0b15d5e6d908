#!/bin/bash
# The project's own non-targeted attack (nips-attack defaults: MI-FGSM) against EfficientNet-Lite0.
#   ./run_attack.sh INPUT_DIR OUTPUT_DIR MAX_EPSILON
set -euo pipefail
exec nips-attack "$1" "$2" "$3" --model efficientnet_lite0 --quiet
