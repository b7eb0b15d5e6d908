"""Time reading the shared dev images through the one image reader (the guard's cost).

python scripts/time_image_reader.py [FOLDER] [--repeats N]: median seconds over N passes of
read_png on every PNG of FOLDER (default ../shared/data/dev_images), the guard on and, for
comparison, Pillow's plain open/load/convert as the reader did before the guard.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

from nips_adv.contract.images import _to_rgb_array, list_png_files, read_png


def unguarded(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        image.load()
        return _to_rgb_array(image)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", nargs="?", default=str(Path(__file__).resolve().parents[2] / "shared/data/dev_images"))
    parser.add_argument("--repeats", type=int, default=7)
    arguments = parser.parse_args()
    paths = list_png_files(Path(arguments.folder))
    readers = {"before (no guard)": unguarded, "after (guarded read_png)": read_png}
    times: dict[str, list[float]] = {name: [] for name in readers}
    for reader in readers.values():
        reader(paths[0])  # warm the cache
    # Passes alternate between the readers, so load from other processes hits both alike.
    for _ in range(arguments.repeats):
        for name, reader in readers.items():
            started = time.perf_counter()
            for path in paths:
                reader(path)
            times[name].append(time.perf_counter() - started)
    for name, seconds in times.items():
        print(
            f"{name}: {len(paths)} images, median {statistics.median(seconds):.3f} s "
            f"(min {min(seconds):.3f}, max {max(seconds):.3f}) over {arguments.repeats} passes"
        )

if __name__ == "__main__":
    main()
