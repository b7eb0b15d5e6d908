"""The evaluation's intermediate folder: every file and folder name, derived here and nowhere else.

::

    evaluation.json            what was evaluated (plan.Evaluation)
    evaluation.log             the run log: every problem, by name
    submissions/KIND/NAME/     extracted archives
    pieces/KIND/NAME/batch_NNNN/   one work piece: input/, output/, clipped/, logs, done.json
    all_adv_examples/          the pool (anonymous names); pool.json its key
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..contract.images import image_file_name

EVALUATION_FILE = "evaluation.json"
LOG_FILE = "evaluation.log"
SUBMISSIONS_DIR = "submissions"
PIECES_DIR = "pieces"
POOL_DIR = "all_adv_examples"
POOL_FILE = "pool.json"

DONE_FILE = "done.json"
"""Written last by a piece that ran (whatever its outcome): the piece's record."""
ERROR_FILE = "error.json"
"""Written instead of done.json when the runner could not start, so that the next run tries again."""
RESULT_FILE = "result.csv"
INPUT_DIR = "input"
OUTPUT_DIR = "output"
CLIPPED_DIR = "clipped"


def batch_name(batch_index: int) -> str:
    """``batch_NNNN``: a piece's folder and the last part of its key."""
    return f"batch_{batch_index:04d}"


def piece_dir(pieces_root: Path, kind: str, submission: str, batch_index: int) -> Path:
    """The folder of one work piece: ``PIECES_ROOT/KIND/NAME/batch_NNNN``."""
    return Path(pieces_root) / kind / submission / batch_name(batch_index)


def clipped_image(piece_folder: Path, image_id: str) -> Path:
    """An attack piece's adversarial image, resized back if needed and clipped to the epsilon box."""
    return Path(piece_folder) / CLIPPED_DIR / image_file_name(image_id)


@dataclass(frozen=True)
class EvaluationLayout:
    """The intermediate folder ``root`` of one evaluation."""

    root: Path

    @property
    def evaluation_file(self) -> Path:
        return self.root / EVALUATION_FILE

    @property
    def log_file(self) -> Path:
        return self.root / LOG_FILE

    @property
    def pieces_dir(self) -> Path:
        return self.root / PIECES_DIR

    @property
    def pool_dir(self) -> Path:
        return self.root / POOL_DIR

    @property
    def pool_file(self) -> Path:
        return self.root / POOL_FILE

    def extracted_dir(self, kind: str) -> Path:
        """Where the archives of ``kind`` are extracted, one folder per submission."""
        return self.root / SUBMISSIONS_DIR / kind

    def piece_dir(self, kind: str, submission: str, batch_index: int) -> Path:
        return piece_dir(self.pieces_dir, kind, submission, batch_index)
