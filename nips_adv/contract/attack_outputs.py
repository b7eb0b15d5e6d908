"""The one check of an attack's output image against its clean image: what is wrong with it, how far it
moved, and the pixels the organisers score (resized back where that is the policy, clipped to eps)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import UnidentifiedImageError

from .epsilon import max_perturbation, project_to_epsilon_box
from .images import ImageReadError, open_image_guarded, read_png, resize_pixels

WrongSize = Literal["resize", "refuse"]
"""An output of another size than its clean image: resized back (bicubic), as the organisers' scoring does,
or refused unread, as a validator that reports it should."""


@dataclass(frozen=True)
class CheckedOutput:
    """One output image, checked: ``problems`` as (kind, message), kinds ``unreadable``, ``size``,
    ``format`` and ``mode``; ``distance`` the largest |output - clean| as written (after resizing back);
    ``scored`` the pixels the organisers score, clipped to the epsilon box. Both None when unusable."""

    problems: tuple[tuple[str, str], ...]
    distance: int | None
    scored: np.ndarray | None

    def problem(self, kind: str) -> str | None:
        """The message of the problem of ``kind``, or None."""
        return next((message for found, message in self.problems if found == kind), None)


def check_attack_output(path: Path, clean: np.ndarray, eps: float, *, wrong_size: WrongSize) -> CheckedOutput:
    """Check the output at ``path`` against ``clean`` ((h, w, 3) uint8) at ``eps``, with the size policy ``wrong_size``.

    The header is read first (a bomb or a gigapixel claim is not decoded); a wrong size is a problem under
    either policy. Not PNG, or not RGB, is a problem too; the organisers read such files all the same
    (``convert('RGB')``), so they are still scored.
    """
    name = Path(path).name
    try:
        with open_image_guarded(path, name, limit=2**62) as image:
            image_format, mode, size = image.format, image.mode, image.size
    except ImageReadError as error:
        return CheckedOutput((("unreadable", str(error)),), None, None)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as error:
        return CheckedOutput((("unreadable", f"{name}: cannot read image ({error})"),), None, None)
    problems: list[tuple[str, str]] = []
    if size != (clean.shape[1], clean.shape[0]):
        problems.append(("size", f"{name} is {size[0]}x{size[1]}"))
        if wrong_size == "refuse":
            return CheckedOutput(tuple(problems), None, None)
    if image_format != "PNG":
        problems.append(("format", f"{name} is {image_format}"))
    if mode != "RGB":
        problems.append(("mode", f"{name} is {mode}"))
    try:
        pixels = read_png(Path(path))
    except ImageReadError as error:
        return CheckedOutput((*problems, ("unreadable", str(error))), None, None)
    if pixels.shape != clean.shape:
        pixels = resize_pixels(pixels, clean.shape[:2])
    return CheckedOutput(tuple(problems), max_perturbation(pixels, clean), project_to_epsilon_box(pixels.astype(np.float32), clean, eps))
