"""Write nips_adv/data/imagenet_class_names.txt: the 1000 ILSVRC-2012 class names, line N = label N.

Source (offline, from PyPI): the timm wheel's ``timm/data/_info/imagenet_synsets.txt`` (the 1000
WordNet ids in the standard sorted order, which is also the output order of the ImageNet
classifiers, label = index + 1) and ``imagenet_synset_to_lemma.txt`` (wnid -> WordNet lemmas).
timm is not a dependency of nips_adv; the generated text file is committed.

    pip download --no-deps timm -d /tmp/timm
    python scripts/make_imagenet_class_names.py /tmp/timm/timm-*.whl
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

from nips_adv.contract.atomic import write_text_atomically

INFO = "timm/data/_info/"
DESTINATION = Path(__file__).resolve().parents[1] / "nips_adv" / "data" / "imagenet_class_names.txt"


def class_names_from_timm_wheel(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        synsets = archive.read(INFO + "imagenet_synsets.txt").decode().split()
        lemma_lines = archive.read(INFO + "imagenet_synset_to_lemma.txt").decode().splitlines()
    lemmas = dict(line.split("\t", 1) for line in lemma_lines if "\t" in line)
    if len(synsets) != 1000 or synsets != sorted(synsets):
        raise SystemExit(f"{wheel}: expected 1000 sorted ImageNet synsets, got {len(synsets)}")
    return [lemmas[wnid].strip() for wnid in synsets]


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    names = class_names_from_timm_wheel(Path(sys.argv[1]))
    write_text_atomically(DESTINATION, "\n".join(names) + "\n")
    print(f"wrote {len(names)} names to {DESTINATION}")


if __name__ == "__main__":
    main()
