"""The pool: every clipped adversarial image, and every clean image, under an anonymous name.

As in the organisers' ``all_adv_examples`` folder, names are ``00000000.png``, ``00000001.png``,
... ; here they are dealt in a random order (kept in ``pool.json``) so that a defense batch
mixes attacks and clean images and a defense cannot tell which attack made an image. Clean
images are in the pool so that each defense's clean accuracy is measured in the same runs;
they never count in the official scores.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..contract.atomic import write_text_atomically
from ..contract.images import image_file_name
from .layout import POOL_DIR, POOL_FILE
from .plan import CLEAN_TRACK, DatasetImage, digest


@dataclass(frozen=True)
class PoolEntry:
    """What a pool name stands for: ``track`` (attack, targeted_attack or clean), the attack and the image."""

    track: str
    attack: str
    image_id: str


@dataclass(frozen=True)
class Pool:
    entries: dict[str, PoolEntry]
    """Pool name (without ``.png``) -> what it is."""
    fingerprint: str

    @property
    def names(self) -> list[str]:
        return sorted(self.entries)

    def name_of(self) -> dict[tuple[str, str, str], str]:
        """(track, attack, image_id) -> pool name."""
        return {(entry.track, entry.attack, entry.image_id): name for name, entry in self.entries.items()}


def build_pool(
    intermediate_dir: Path,
    images: list[DatasetImage],
    clipped: list[tuple[str, str, str, str]],
) -> Pool:
    """Link (or copy) every image into ``intermediate_dir/all_adv_examples`` under its pool name.

    ``clipped`` lists (track, attack, image_id, path) of every clipped adversarial image. The
    name assignment is reused from ``pool.json`` when the set of images is unchanged (a resumed
    run), so finished defense pieces stay valid; otherwise a new random assignment is drawn.
    """
    sources = {(CLEAN_TRACK, CLEAN_TRACK, image.image_id): image.path for image in images}
    sources.update({(track, attack, image_id): path for track, attack, image_id, path in clipped})
    slots = sorted(sources)
    pool_file = Path(intermediate_dir) / POOL_FILE
    pool = _load_pool(pool_file)
    if pool is None or sorted((entry.track, entry.attack, entry.image_id) for entry in pool.entries.values()) != slots:
        order = list(range(len(slots)))
        random.SystemRandom().shuffle(order)
        entries = {f"{index:08d}": PoolEntry(*slots[slot]) for index, slot in zip(order, range(len(slots)))}
        pool = Pool(entries, digest([[name, *_entry_list(entry)] for name, entry in sorted(entries.items())]))
        pool_dir = Path(intermediate_dir) / POOL_DIR
        if pool_dir.exists():
            shutil.rmtree(pool_dir)
        pool_dir.mkdir(parents=True)
        for name, entry in pool.entries.items():
            _link_or_copy(Path(sources[(entry.track, entry.attack, entry.image_id)]), pool_dir / image_file_name(name))
        document = {"fingerprint": pool.fingerprint, "entries": {name: _entry_list(entry) for name, entry in sorted(entries.items())}}
        write_text_atomically(pool_file, json.dumps(document, indent=0))
    return pool


def _entry_list(entry: PoolEntry) -> list[str]:
    return [entry.track, entry.attack, entry.image_id]


def _load_pool(pool_file: Path) -> Pool | None:
    try:
        document = json.loads(pool_file.read_text(encoding="utf-8"))
        entries = {name: PoolEntry(*values) for name, values in document["entries"].items()}
        return Pool(entries, document["fingerprint"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_pool(intermediate_dir: Path) -> Pool | None:
    """The pool recorded in ``intermediate_dir/pool.json``, or None."""
    return _load_pool(Path(intermediate_dir) / POOL_FILE)


def _link_or_copy(source: Path, destination: Path) -> None:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copyfile(source, destination)
