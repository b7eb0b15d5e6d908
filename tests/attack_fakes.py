"""Stand-ins for a model and a clock, for tests of the folder job (no TensorFlow, exact timings)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from nips_adv.contract.images import write_png


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def write_inputs(folder: Path, count: int) -> dict[str, np.ndarray]:
    folder.mkdir()
    rng = np.random.default_rng(3)
    clean = {}
    for index in range(count):
        pixels = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        write_png(pixels, folder / f"{index:03d}.png")
        clean[f"{index:03d}.png"] = pixels
    return clean


class CountingModel:
    """Each image-gradient costs ``seconds_per_image(call index)`` on the fake clock (default 1 s);
    records how many images and which labels each call saw."""

    def __init__(self, clock: FakeClock, seconds_per_image: Callable[[int], float] = lambda call: 1.0) -> None:
        self.clock = clock
        self.seconds_per_image = seconds_per_image
        self.call_sizes: list[int] = []
        self.call_labels: list[np.ndarray | None] = []

    def gradient_function(self, loss, transform=None, *, backward=None):
        copies = 1 if transform is None else transform.copies  # each copy costs an image-gradient

        def gradient_of(pixels, labels, weights=None):
            self.clock.now += self.seconds_per_image(len(self.call_sizes)) * len(pixels) * copies
            self.call_sizes.append(len(pixels))
            self.call_labels.append(np.asarray(labels).copy())
            return np.ones(pixels.shape, np.float32)

        return gradient_of

    def logits(self, pixels):
        """Label 3 most likely, label 1000 least."""
        logits = np.zeros((len(pixels), 1000), np.float32)
        logits[:, 2], logits[:, 999] = 1.0, -1.0
        return logits
