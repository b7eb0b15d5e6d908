"""Numbers fixed by the competition; defined once here."""

IMAGE_SIZE = 299
"""Side of every competition image, in pixels."""

NUM_LABELS = 1000
"""TF-slim ImageNet labels run 1..NUM_LABELS; 0 is the unused background class."""

SLIM_NUM_CLASSES = NUM_LABELS + 1
"""Logits of a TF-slim ImageNet checkpoint: the background class 0, then labels 1..NUM_LABELS."""

MAX_EPSILON = 255
"""Largest MAX_EPSILON: a perturbation of 255 may set any pixel to any value."""
COMPETITION_EPSILONS = (4, 8, 12, 16)
"""The MAX_EPSILON values the organisers used (one per batch of 100 in the final round)."""

BATCH_IMAGES = 100
"""Images in one work piece."""

BATCH_TIME_LIMIT_S = 500.0
"""Seconds a submission gets for one work piece of BATCH_IMAGES images."""

MAX_ARCHIVE_BYTES = 8 * 1024**3
MAX_UNPACKED_BYTES = 16 * 1024**3
MAX_DOCKER_IMAGE_BYTES = 8 * 1024**3
DOCKER_MEMORY_LIMIT = "24g"

ATTACK_TYPES = ("attack", "targeted_attack")
SUBMISSION_TYPES = ("attack", "targeted_attack", "defense")
TARGET_CLASS_FILE = "target_class.csv"

DEFAULT_EPSILON = 16
"""MAX_EPSILON when none is given: the organisers' run_attacks_and_defenses.py default and the largest
of COMPETITION_EPSILONS."""

DEFAULT_BATCH_SIZE = 16
"""Images per model call when the user does not say (fits a CPU's memory at 299x299)."""
