#!/bin/bash
# The project's own targeted attack (nips-targeted-attack defaults) against EfficientNet-Lite0;
# INPUT_DIR holds target_class.csv.
#   ./run_attack.sh INPUT_DIR OUTPUT_DIR MAX_EPSILON
set -euo pipefail
exec nips-targeted-attack "$1" "$2" "$3" --model efficientnet_lite0 --quiet
