#!/bin/bash
# Sample non-targeted attack: one FGSM step against EfficientNet-Lite0 (weights ship with the package).
#   ./run_attack.sh INPUT_DIR OUTPUT_DIR MAX_EPSILON
set -euo pipefail
exec nips-attack "$1" "$2" "$3" --method fgsm --model efficientnet_lite0 --quiet
