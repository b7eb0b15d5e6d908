#!/usr/bin/env bash
# Time each container stage on this machine: the images, each default tool validated in its container
# on dev images (the entry point's seconds of the 500 s per 100 images), and a Docker evaluation.
#
#   scripts/measure_containers.sh DEV_IMAGES DATASET_CSV [--num-images N] [--fresh] [--out DIR]
#
# --fresh removes the stand-in bases and the project images first, so the build is timed from nothing
# (the package registries are still needed). Run it with nothing else running: the attack plans and the
# defense fit themselves to the machine's measured speed. Figures go to stdout; work files to --out.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NIPS_ADV="${NIPS_ADV:-nips-adv}"
NUM_IMAGES=100
FRESH=0
OUT="$(mktemp -d)"
fail() { echo "measure_containers.sh: $*" >&2; exit 2; }
[ "$#" -ge 2 ] || { sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2; }
DEV="$1"
CSV="$2"
shift 2
while [ "$#" -gt 0 ]; do
    case "$1" in
        --num-images) NUM_IMAGES="$2"; shift 2 ;;
        --fresh) FRESH=1; shift ;;
        --out) OUT="$2"; shift 2 ;;
        *) fail "unknown option $1" ;;
    esac
done
[ -d "$DEV" ] || fail "no folder $DEV"
[ -f "$CSV" ] || fail "no file $CSV"
mkdir -p "$OUT"
VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$ROOT/pyproject.toml")"
IMAGE="nips-adv:${VERSION}"

echo "machine: $(nproc) CPUs, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1), $(date -u +%F), nips_adv $VERSION ($(git -C "$ROOT" rev-parse --short HEAD 2> /dev/null || echo no git))"
if [ "$FRESH" -eq 1 ]; then
    docker image ls --format '{{.Repository}}:{{.Tag}}' | grep -E "^(nips-adv-stand-in/|nips-adv:)" | xargs -r docker rmi -f > /dev/null
    docker builder prune -f > /dev/null 2>&1 || true
fi
started=$SECONDS
"$ROOT/scripts/build_images.sh"
echo "images: $((SECONDS - started)) s in all"

# The README's CI recipe: the default tools, packaged; validated in their container on dev images.
"$NIPS_ADV" package attack --model efficientnet_lite0,efficientnet_lite1 --image "$IMAGE" -o "$OUT/attack.zip" > /dev/null
"$NIPS_ADV" package targeted_attack --model efficientnet_lite0,efficientnet_lite1 --image "$IMAGE" -o "$OUT/targeted_attack.zip" > /dev/null
"$NIPS_ADV" package defense --model efficientnet_lite1,efficientnet_lite2 --image "$IMAGE" -o "$OUT/defense.zip" > /dev/null
for kind in attack targeted_attack defense; do
    case "$kind" in
        attack) score=(--eps 16 --model efficientnet_lite2) ;;
        targeted_attack) score=(--eps 16 --model efficientnet_lite2) ;;
        defense) score=() ;;
    esac
    started=$SECONDS
    "$NIPS_ADV" validate "$OUT/$kind.zip" --type "$kind" --docker --seed 0 --images "$DEV" --dataset "$CSV" \
        --num-images "$NUM_IMAGES" "${score[@]}" > "$OUT/$kind.validate.txt" 2>&1 || true
    entry="$(grep -o 'entry point [^;]*' "$OUT/$kind.validate.txt" | grep -E 'exited|exceeded|killed' | head -n 1)"
    # A targeted attack's figure is its hit rate; the others', the accuracy.
    figure="$( (grep -E 'hit rate of' "$OUT/$kind.validate.txt" || grep -E 'accuracy of' "$OUT/$kind.validate.txt") | head -n 1 | sed 's/^ *- //')"
    verdict="$(tail -n 1 "$OUT/$kind.validate.txt" | grep -E 'VALID|INVALID' || grep -E ': (VALID|INVALID)' "$OUT/$kind.validate.txt" | tail -n 1)"
    echo "validate --docker $kind, $NUM_IMAGES images: $((SECONDS - started)) s in all; $entry; $figure; $verdict"
done

# The samples through the Docker runner, as the tier compares them with the local runner.
mkdir -p "$OUT/dev8"
"$NIPS_ADV" --version > /dev/null
python3 - "$DEV" "$CSV" "$OUT/dev8" <<'PY'
import csv, shutil, sys
from pathlib import Path
dev, dataset, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
rows = sorted(csv.DictReader(open(dataset, newline="")), key=lambda row: row["ImageId"])
rows = [row for row in rows if (dev / f"{row['ImageId']}.png").is_file()][:8]
for row in rows:
    shutil.copyfile(dev / f"{row['ImageId']}.png", out / f"{row['ImageId']}.png")
with open(out / "dataset.csv", "w", newline="") as stream:
    writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
PY
started=$SECONDS
"$NIPS_ADV" evaluate --attacks-dir "$ROOT/submissions/samples/attacks" --defenses-dir "$ROOT/submissions/samples/defenses" \
    --dataset-dir "$OUT/dev8" --dataset-metadata "$OUT/dev8/dataset.csv" --intermediate-results-dir "$OUT/evaluate-work" \
    --output-dir "$OUT/evaluate" --runner docker --quiet > "$OUT/evaluate.txt" 2>&1 || true
echo "evaluate --runner docker, 4 sample attacks x 3 sample defenses, 8 images: $((SECONDS - started)) s"
echo "work files in $OUT"
