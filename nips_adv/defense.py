"""Re-export: the defense's folder job lives in ``nips_adv.defenses.directory`` (kept for old imports)."""

from .defenses.directory import check_output_file, classify_directory, predict_directory

__all__ = ["check_output_file", "classify_directory", "predict_directory"]
