"""The validator gives every archive a verdict and a bounded report, never a traceback."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from hostile_inputs import png_bytes

from nips_adv.submission.validate import INVALID, validate_submission

ENTRY = "run.sh"


def make_zip(path: Path, members: dict[str, tuple[bytes, int]]) -> Path:
    with zipfile.ZipFile(path, "w") as bundle:
        for name, (data, mode) in members.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o100000 | mode) << 16
            bundle.writestr(info, data)
    return path


def submission(submission_type: str, script: str, **extra: tuple[bytes, int]) -> dict[str, tuple[bytes, int]]:
    metadata = {"type": submission_type, "container": "x:1", "container_gpu": "x:1-gpu", "entry_point": ENTRY}
    return {"metadata.json": (json.dumps(metadata).encode(), 0o644), ENTRY: (script.encode(), 0o755), **extra}


BOMB_WRITER = """#!/usr/bin/env python
import shutil, sys
from pathlib import Path
for path in sorted(Path(sys.argv[1]).glob("*.png")):
    shutil.copy("bomb.png", Path(sys.argv[2]) / path.name)
"""

CASES = {
    "member name over NAME_MAX": (
        "attack",
        submission("attack", "#!/bin/sh\nexit 0\n", **{"x" * 300: (b"", 0o644)}),
        "name longer than the file system allows",
    ),
    "deeply nested metadata.json": (
        "attack",
        {"metadata.json": (b"[" * 30_000 + b"]" * 30_000, 0o644), ENTRY: (b"#!/bin/sh\n", 0o755)},
        "nested too deeply",
    ),
    "entry point writes image bombs": (
        "attack",
        submission("attack", BOMB_WRITER, **{"bomb.png": (png_bytes(100_000, 100_000, rows=1), 0o644)}),
        "unreadable",
    ),
    "entry point deletes its INPUT_DIR": (
        "attack",
        submission("attack", '#!/bin/sh\nchmod -R u+w "$1" && rm -rf "$1"\n'),
        "removed or replaced its INPUT_DIR",
    ),
    "20 MB of stderr without a newline": (
        "attack",
        submission("attack", "#!/usr/bin/env python\nimport sys\nsys.stderr.write('x' * 20_000_000)\nsys.exit(1)\n"),
        "exited with status 1",
    ),
    "defense writing 100,000 bad rows": (
        "defense",
        submission("defense", "#!/usr/bin/env python\nimport sys\nopen(sys.argv[2], 'w').write('IMG0000.png,cat\\n' * 100_000)\n"),
        "more bad row(s)",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_hostile_archive_gets_a_verdict_and_a_bounded_report(tmp_path: Path, case: str) -> None:
    submission_type, members, reason = CASES[case]
    archive = make_zip(tmp_path / "sub.zip", members)
    report = validate_submission(archive, submission_type=submission_type, num_images=2, time_limit=60)
    text = "\n".join(report.lines())
    assert report.status == INVALID, text
    assert reason in text, text
    assert len(text) < 6_000, f"report of {len(text)} characters"
    assert "Traceback" not in text
