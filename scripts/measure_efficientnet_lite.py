"""Print top-1 accuracy on the shared dev images and forward time per image of EfficientNet-Lite0/1/2.

    python scripts/measure_efficientnet_lite.py [--data ../shared/data] [--batch-size 16] [MODEL ...]

Reference top-1 on the 200 dev images (reference PyTorch implementation): Lite0 0.895, Lite1 0.925,
Lite2 0.935. The first run converts each model's packaged weights into the cache folder.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from nips_adv.contract.csv_files import read_dataset_csv
from nips_adv.contract.images import read_png
from nips_adv.models.classifier import Classifier

DEFAULT_MODELS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=DEFAULT_MODELS)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--batch-size", type=int, default=16)
    options = parser.parse_args()

    frame = read_dataset_csv(options.data / "dev_images.csv")
    images = np.stack([read_png(options.data / "dev_images" / f"{image_id}.png") for image_id in frame["ImageId"]])
    labels = frame["TrueLabel"].to_numpy()
    batches = [images[start : start + options.batch_size] for start in range(0, len(images), options.batch_size)]
    for name in options.models:
        started = time.perf_counter()
        with Classifier.create(name) as classifier:
            ready = time.perf_counter()
            classifier.logits(batches[0])  # warm-up: first run allocates and optimises the graph
            timed = time.perf_counter()
            predictions = np.concatenate([classifier.predict(batch) for batch in batches])
            finished = time.perf_counter()
        accuracy = float(np.mean(predictions == labels))
        print(
            f"{name}: top-1 {accuracy:.3f} on {len(images)} images; "
            f"{1000 * (finished - timed) / len(images):.1f} ms/image at batch {options.batch_size}; "
            f"load {ready - started:.1f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
