"""Peak memory and wall time of each default tool, on a folder of images or on the largest image --max-pixels admits.

    python scripts/measure_memory.py [--images DIR] [--side 4096] [--count 1] [--eps 16]

Without --images it writes ``--count`` noisy ``--side`` x ``--side`` PNGs (the default --max-pixels admits
4096 x 4096) to a temporary folder. Each tool runs as its own process with the models the packaged
submissions use (attacks: Lite0 + Lite1, the defense: Lite1 + Lite2, default recipe) and the default time
budget; the line per tool gives its exit status, wall seconds and peak resident memory (the kernel's
maxrss of that process and its children). Run it with nothing else running.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

BIN = Path(sys.executable).parent
ATTACK_MODELS = "efficientnet_lite0,efficientnet_lite1"


def noisy_images(folder: Path, side: int, count: int) -> None:
    rng = np.random.default_rng(0)
    base = np.linspace(0, 255, side, dtype=np.float32)
    for index in range(count):
        pixels = (base[None, :, None] + rng.normal(0, 40, size=(side, side, 3))).clip(0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"large{index:02d}.png")
    with open(folder / "target_class.csv", "w") as stream:
        stream.writelines(f"large{index:02d}.png,{index + 1}\n" for index in range(count))


def measured(command: list[str]) -> tuple[int, float, float]:
    """(exit status, wall seconds, peak RSS in GiB) of ``command`` and its children."""
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    error = process.stderr.read().decode(errors="replace").strip().splitlines() if process.stderr else []
    if process.returncode:
        print(f"  ({command[0]}: {error[-1] if error else 'no message'})")
    return process.returncode, time.monotonic() - started, usage.ru_maxrss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=Path, help="A folder of PNGs (default: large noisy images written here).")
    parser.add_argument("--side", type=int, default=4096)
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--eps", default="16")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nips_adv_memory_") as work:
        folder = arguments.images or Path(work) / "in"
        if arguments.images is None:
            folder.mkdir()
            noisy_images(folder, arguments.side, arguments.count)
        count = len(list(folder.glob("*.png")))
        print(f"machine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, {time.strftime('%Y-%m-%d')}; "
              f"{count} images from {'the folder ' + str(folder) if arguments.images else f'{arguments.side}x{arguments.side} noise'}")
        runs = {
            "nips-attack": [str(BIN / "nips-attack"), str(folder), f"{work}/attack", arguments.eps, "--model", ATTACK_MODELS, "-q"],
            "nips-targeted-attack": [str(BIN / "nips-targeted-attack"), str(folder), f"{work}/targeted", arguments.eps,
                                     "--model", ATTACK_MODELS, "-q"],
            "nips-defense": [str(BIN / "nips-defense"), str(folder), f"{work}/defense.csv", "-q"],
            "nips-defense --plain": [str(BIN / "nips-defense"), str(folder), f"{work}/plain.csv", "--plain", "-q"],
        }
        for name, command in runs.items():
            status, seconds, peak = measured(command)
            print(f"{name}: exit {status}, {seconds:.1f} s, peak RSS {peak:.2f} GiB")


if __name__ == "__main__":
    main()
