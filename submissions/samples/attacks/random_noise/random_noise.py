"""Random sign noise of size MAX_EPSILON on every PNG of INPUT_DIR: ``random_noise.py INPUT_DIR OUTPUT_DIR MAX_EPSILON``."""

import sys
from pathlib import Path

import numpy as np

from nips_adv.contract.epsilon import project_to_epsilon_box, validate_epsilon
from nips_adv.contract.images import list_png_files, read_png, write_png


def main(input_dir: Path, output_dir: Path, epsilon: float) -> None:
    generator = np.random.default_rng(0)
    output_dir.mkdir(parents=True, exist_ok=True)
    for path in list_png_files(input_dir):
        clean = read_png(path)
        noise = generator.choice(np.array([-epsilon, epsilon], dtype=np.float32), size=clean.shape)
        write_png(project_to_epsilon_box(clean.astype(np.float32) + noise, clean, epsilon), output_dir / path.name)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), validate_epsilon(sys.argv[3]))
