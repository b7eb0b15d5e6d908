"""Image bombs: a PNG declaring a huge size is named and skipped from its header, never decoded."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hostile_inputs import HUGE_SIZE, UNDER_PILLOW_LIMIT, LocalServer, send_body, write_bombs

from nips_adv.contract.images import ImageTooLargeError, read_png, set_max_pixels, write_png

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_reader_refuses_bombs_from_their_header(tmp_path: Path) -> None:
    huge, under = write_bombs(tmp_path)
    for path, (width, height) in ((huge, HUGE_SIZE), (under, UNDER_PILLOW_LIMIT)):
        with pytest.raises(ImageTooLargeError, match=path.name):
            read_png(path)
    assert f"{UNDER_PILLOW_LIMIT[0]}x{UNDER_PILLOW_LIMIT[1]}" in str(pytest.raises(ImageTooLargeError, read_png, under).value)
    # The limit is an option: raised above the image, the same file decodes.
    set_max_pixels(UNDER_PILLOW_LIMIT[0] * UNDER_PILLOW_LIMIT[1])
    try:
        assert read_png(under).shape == (*UNDER_PILLOW_LIMIT, 3)
    finally:
        set_max_pixels(None)


def test_memory_stays_bounded_reading_a_folder_of_bombs(tmp_path: Path) -> None:
    # In a fresh process, so its peak resident memory measures the reader alone.
    write_bombs(tmp_path / "in")
    for index in range(3):
        write_png(np.full((299, 299, 3), index, np.uint8), tmp_path / "in" / f"good{index}.png")
    script = textwrap.dedent(
        f"""
        import json, sys
        from nips_adv.jobs.folder_job import JobReport, input_batches
        report = JobReport()
        names = [name for batch in input_batches({str(tmp_path / "in")!r}, 16, report, progress=False) for name in batch.names]
        # VmHWM: this program's own peak (ru_maxrss would include the parent's, copied at fork).
        status = open("/proc/self/status").read()
        peak_mb = int(status.split("VmHWM:")[1].split()[0]) / 1024
        print(json.dumps({{"names": names, "failures": report.failures, "peak_mb": peak_mb}}))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["names"] == ["good0.png", "good1.png", "good2.png"]
    assert len(result["failures"]) == 2 and all("bomb_" in line for line in result["failures"])
    # Decoding the 81-megapixel one alone would take over 300 MB (grey + RGB copies).
    assert result["peak_mb"] < 200, result


def test_pixel_budget_bounds_batches_of_large_distinct_sizes(tmp_path: Path) -> None:
    from nips_adv.contract.images import iter_image_batches

    set_max_pixels(300 * 300)
    try:
        paths = []
        for index in range(6):  # all under the limit, each of its own size: none would batch before the end
            path = tmp_path / f"img{index}.png"
            write_png(np.zeros((200 + index, 200, 3), np.uint8), path)
            paths.append(path)
        held = []
        for batch in iter_image_batches(paths, 100, on_error=lambda error: None):
            held.append(len(batch.paths))
        # 100 images per batch would hold all six; the pixel budget (max(limit, 100 x 299 x 299)) does
        # not split these, but a smaller batch size makes it bind:
        assert sum(held) == 6
        held = [len(batch.paths) for batch in iter_image_batches(paths, 1, on_error=lambda error: None)]
        assert held == [1] * 6
    finally:
        set_max_pixels(None)


@pytest.mark.e2e
def test_tools_name_the_bomb_and_write_the_others(tmp_path: Path, inception_v3_checkpoint: Path) -> None:
    from nips_adv.cli.attack import attack_command
    from nips_adv.cli.defense import defense_command

    write_bombs(tmp_path / "in")
    for index in range(2):
        write_png(np.full((299, 299, 3), 40 * index, np.uint8), tmp_path / "in" / f"good{index}.png")
    common = ["--checkpoint", str(inception_v3_checkpoint), "--quiet", "--batch-size", "4"]
    defended = CliRunner().invoke(
        defense_command, [str(tmp_path / "in"), str(tmp_path / "result.csv"), "--model", "inception_v3", *common]
    )
    assert defended.exit_code == 1, defended.output
    assert "bomb_huge.png" in defended.output and "bomb_under_limit.png" in defended.output
    rows = (tmp_path / "result.csv").read_text().splitlines()
    assert sorted(row.split(",")[0] for row in rows) == ["good0.png", "good1.png"]
    attacked = CliRunner().invoke(
        attack_command, [str(tmp_path / "in"), str(tmp_path / "out"), "4", "--method", "fgsm", "--time-budget", "off", *common]
    )
    assert attacked.exit_code == 1, attacked.output
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["good0.png", "good1.png"]
    # --max-pixels below 299 x 299 refuses even the good ones, by name.
    refused = CliRunner().invoke(
        defense_command, [str(tmp_path / "in"), str(tmp_path / "small.csv"), "--max-pixels", "1000", "--model", "inception_v3", *common]
    )
    assert refused.exit_code == 1 and "good0.png" in refused.output
    set_max_pixels(None)


def test_dataset_download_decodes_through_the_same_guard(tmp_path: Path) -> None:
    from nips_adv.download.dataset import download_dataset
    from nips_adv.download.http import RetryPolicy

    huge, under = write_bombs(tmp_path / "bombs")
    good = tmp_path / "good.png"
    write_png(np.full((50, 60, 3), 7, np.uint8), good)
    bodies = {"/huge.png": huge.read_bytes(), "/under.png": under.read_bytes(), "/good.png": good.read_bytes()}
    server = LocalServer({path: (lambda handler, body=body: send_body(handler, body)) for path, body in bodies.items()})
    try:
        rows = ["ImageId,URL,x1,y1,x2,y2"] + [
            f"{name},{server.url('/' + name + '.png')},0,0,1,1" for name in ("huge", "under", "good")
        ]
        (tmp_path / "set.csv").write_text("\n".join(rows) + "\n")
        summary = download_dataset(
            str(tmp_path / "set.csv"), tmp_path / "out", jobs=8, policy=RetryPolicy(attempts=1), progress=False
        )
    finally:
        server.close()
    assert summary.downloaded == 1 and (tmp_path / "out" / "good.png").is_file()
    reasons = {failure.image_id: failure.reason for failure in summary.failures}
    assert set(reasons) == {"huge", "under"}
    assert "9000x9000" in reasons["under"] and "not decoded" in reasons["under"]
