"""ImageNet class names for the labels 1..1000 of the competition (and of every model here).

The names are the WordNet lemmas of the ILSVRC-2012 synsets in their standard (sorted wnid)
order, shipped as ``nips_adv/data/imagenet_class_names.txt`` (line N = label N; made by
``scripts/make_imagenet_class_names.py``).
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

from .constants import NUM_LABELS

CLASS_NAMES_FILE = "imagenet_class_names.txt"


@lru_cache(maxsize=1)
def class_names() -> tuple[str, ...]:
    """The 1000 class names; index i is label i + 1."""
    text = resources.files("nips_adv").joinpath("data").joinpath(CLASS_NAMES_FILE).read_text(encoding="utf-8")
    names = tuple(text.splitlines())
    if len(names) != NUM_LABELS:
        raise RuntimeError(f"{CLASS_NAMES_FILE} holds {len(names)} names, expected {NUM_LABELS}")
    return names


def class_name(label: int) -> str:
    """The name of ``label`` (1..1000), e.g. ``class_name(282) == "tabby, tabby cat"``."""
    if not 1 <= int(label) <= NUM_LABELS:
        raise ValueError(f"label {label} is not in 1..{NUM_LABELS}")
    return class_names()[int(label) - 1]
