"""Downloads against a local HTTP server on 127.0.0.1: dataset images and reference checkpoints."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import subprocess
import sys
import tarfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from nips_adv.cli.download import download_group
from nips_adv.contract.images import read_png
from nips_adv.download.checkpoints import (
    CheckpointDownloadError,
    ChecksumMismatchError,
    get_checkpoint_entry,
    install_checkpoint,
    rewrite_checkpoint,
)
from nips_adv.download.dataset import FAILED_FILE, download_dataset, mirrored_url
from nips_adv.download.http import FetchError, RetryPolicy, fetch_to_file
from nips_adv.models.checkpoints import CheckpointError

FAST = RetryPolicy(attempts=2, backoff_s=0.01, timeout_s=2.0)
FAST_OPTIONS = ["--quiet", "--retries", "1", "--backoff", "0.01", "--timeout", "2"]
HEADER = ["ImageId", "URL", "x1", "y1", "x2", "y2", "TrueLabel", "TargetClass"]


# --- the local server ---------------------------------------------------------------------------


@dataclass
class Route:
    """What the server answers on one path."""

    body: bytes = b""
    status: int = 200
    content_type: str = "image/jpeg"
    delay_s: float = 0.0
    truncate_to: int | None = None  # announce the whole body, send only this many bytes
    fail_times: int = 0  # answer 503 this many times before the real answer
    redirect_to: str | None = None


class LocalServer:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: Counter[str] = Counter()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                path = self.path.split("?", 1)[0]
                server.hits[path] += 1
                route = server.routes.get(path)
                if route is None:
                    self.send_error(404, "Not Found")
                    return
                if route.delay_s:
                    time.sleep(route.delay_s)
                if server.hits[path] <= route.fail_times:
                    self.send_error(503, "Service Unavailable")
                    return
                if route.redirect_to is not None:
                    self.send_response(302)
                    self.send_header("Location", route.redirect_to)
                    self.end_headers()
                    return
                self.send_response(route.status)
                self.send_header("Content-Type", route.content_type)
                self.send_header("Content-Length", str(len(route.body)))
                self.end_headers()
                body = route.body if route.truncate_to is None else route.body[: route.truncate_to]
                try:
                    self.wfile.write(body)
                except OSError:
                    pass  # the client gave up (timeout test)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    local = LocalServer()
    yield local
    local.close()


# --- generated images ---------------------------------------------------------------------------


def make_image(mode: str, size: tuple[int, int], seed: int) -> Image.Image:
    """Noise over a gradient, so that any crop or filter difference changes pixels."""
    rng = np.random.default_rng(seed)
    width, height = size
    gradient = np.add.outer(np.arange(height), np.arange(width)) * (255.0 / (width + height))
    rgb = np.clip(gradient[:, :, None] + rng.integers(0, 90, (height, width, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(rgb, mode="RGB")
    if mode == "RGBA":
        image.putalpha(Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8), mode="L"))
        return image
    if mode == "LA":
        return image.convert("RGBA").convert("LA")
    if mode == "P":
        return image.quantize(colors=64)
    return image.convert(mode)


def encode(image: Image.Image, image_format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def expected_pixels(data: bytes, box: tuple[float, float, float, float]) -> np.ndarray:
    """Pillow's own crop and resize of the same source, as the organisers' download_images.py does it."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    width, height = image.size
    x1, y1, x2, y2 = box
    cropped = image.crop((int(x1 * width), int(y1 * height), int(x2 * width), int(y2 * height)))
    return np.asarray(cropped.resize((299, 299), Image.Resampling.LANCZOS))


def write_dataset_csv(path: Path, rows: list[tuple[str, str, float, float, float, float]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(HEADER)
        for row in rows:
            writer.writerow([*row, 1, 2])
    return path


def read_failures(path: Path) -> dict[str, str]:
    with open(path, newline="", encoding="utf-8") as stream:
        return {row["ImageId"]: row["Reason"] for row in csv.DictReader(stream)}


# --- dataset: pixels ----------------------------------------------------------------------------


class Source(NamedTuple):
    image_id: str
    mode: str
    image_format: str
    size: tuple[int, int]
    box: tuple[float, float, float, float]


SOURCES = [
    Source("rgb_full", "RGB", "JPEG", (640, 480), (0.0, 0.0, 1.0, 1.0)),
    Source("rgb_box", "RGB", "JPEG", (500, 333), (0.25, 0.0, 1.0, 0.599757673667)),
    Source("grey", "L", "JPEG", (333, 500), (0.0, 0.1, 0.871838111298, 1.0)),
    Source("cmyk", "CMYK", "JPEG", (420, 300), (0.333333333333, 0.2, 0.9, 0.8)),
    Source("palette", "P", "PNG", (310, 290), (0.1, 0.1, 0.6, 0.95)),
    Source("alpha", "RGBA", "PNG", (256, 256), (0.0, 0.0, 0.5, 0.5)),
    Source("grey_alpha", "LA", "PNG", (200, 260), (0.2, 0.3, 1.0, 1.0)),
    Source("small_upscaled", "RGB", "JPEG", (97, 61), (0.0, 0.0, 1.0, 1.0)),
]


def test_images_match_pillow_crop_and_resize_pixel_for_pixel(server: LocalServer, tmp_path: Path) -> None:
    rows, sources = [], {}
    for index, source in enumerate(SOURCES):
        data = encode(make_image(source.mode, source.size, seed=index), source.image_format)
        path = f"/img/{source.image_id}.{source.image_format.lower()}"
        server.routes[path] = Route(body=data, content_type=f"image/{source.image_format.lower()}")
        rows.append((source.image_id, server.url(path), *source.box))
        sources[source.image_id] = (data, source.box)
    csv_path = write_dataset_csv(tmp_path / "my_dataset.csv", rows)

    out = tmp_path / "images"
    summary = download_dataset(str(csv_path), out, jobs=3, policy=FAST, progress=False)

    assert (summary.total, summary.downloaded, summary.present, summary.failures) == (len(SOURCES), len(SOURCES), 0, [])
    for image_id, (data, box) in sources.items():
        written = out / f"{image_id}.png"
        with Image.open(written) as image:
            assert image.mode == "RGB" and image.size == (299, 299)
        np.testing.assert_array_equal(read_png(written), expected_pixels(data, box), err_msg=image_id)
    assert (out / "my_dataset.csv").read_bytes() == csv_path.read_bytes()
    assert not (out / FAILED_FILE).exists()
    assert sorted(path.name for path in out.iterdir()) == sorted([f"{s.image_id}.png" for s in SOURCES] + ["my_dataset.csv"])


# --- dataset: bad input -------------------------------------------------------------------------


def test_every_bad_image_is_reported_and_the_rest_downloaded(server: LocalServer, tmp_path: Path) -> None:
    good = encode(make_image("RGB", (320, 240), seed=1), "JPEG")
    server.routes.update(
        {
            "/good.jpg": Route(body=good),
            "/server_error.jpg": Route(body=good, status=500),
            "/page.jpg": Route(body=b"<html><body>gone</body></html>", content_type="text/html; charset=utf-8"),
            "/truncated_body.jpg": Route(body=good, truncate_to=len(good) // 3),
            "/corrupt.jpg": Route(body=good[: len(good) // 2]),
            "/not_an_image.jpg": Route(body=b"\x00\x01garbage" * 50, content_type="application/octet-stream"),
            "/slow.jpg": Route(body=good, delay_s=2.0),
            "/flickr_deleted.jpg": Route(redirect_to="/images/en-us/photo_unavailable.png"),
            "/images/en-us/photo_unavailable.png": Route(body=encode(make_image("RGB", (500, 374), 2), "PNG")),
        }
    )
    rows = [
        ("good", server.url("/good.jpg"), 0.1, 0.1, 0.9, 0.9),
        ("missing", server.url("/missing.jpg"), 0, 0, 1, 1),
        ("server_error", server.url("/server_error.jpg"), 0, 0, 1, 1),
        ("page", server.url("/page.jpg"), 0, 0, 1, 1),
        ("truncated_body", server.url("/truncated_body.jpg"), 0, 0, 1, 1),
        ("corrupt", server.url("/corrupt.jpg"), 0, 0, 1, 1),
        ("not_an_image", server.url("/not_an_image.jpg"), 0, 0, 1, 1),
        ("slow", server.url("/slow.jpg"), 0, 0, 1, 1),
        ("flickr_deleted", server.url("/flickr_deleted.jpg"), 0, 0, 1, 1),
        ("box_reversed", server.url("/good.jpg"), 0.5, 0.0, 0.5, 1.0),
        ("box_outside", server.url("/good.jpg"), 0.0, -0.1, 1.0, 1.0),
        ("box_too_wide", server.url("/good.jpg"), 0.2, 0.0, 1.2, 1.0),
        ("../escape", server.url("/good.jpg"), 0, 0, 1, 1),
        ("not_http", "file:///etc/passwd", 0, 0, 1, 1),
    ]
    csv_path = write_dataset_csv(tmp_path / "dataset.csv", rows)
    out = tmp_path / "out"

    result = CliRunner().invoke(
        download_group,
        ["dataset", str(csv_path), "--out", str(out), "--jobs", "4", "--quiet", "--retries", "1", "--backoff", "0.01",
         "--timeout", "0.3"],
    )

    assert result.exit_code == 1, result.output
    assert "1 downloaded, 0 already present, 13 failed" in result.stdout
    failures = read_failures(out / FAILED_FILE)
    assert list(failures) == [row[0] for row in rows[1:]]  # CSV order, every bad row once
    expected_reasons = {
        "missing": "HTTP 404",
        "server_error": "HTTP 500",
        "page": "text/html, not an image",
        "truncated_body": "truncated body",
        "corrupt": "corrupt image",
        "not_an_image": "not a readable image",
        "slow": "timed out",
        "flickr_deleted": "no longer available",
        "box_reversed": "0 <= x1 < x2 <= 1",
        "box_outside": "0 <= y1 < y2 <= 1",
        "box_too_wide": "x2 <= 1",
        "../escape": "not usable as a file name",
        "not_http": "not an http(s) URL",
    }
    for image_id, fragment in expected_reasons.items():
        assert fragment in failures[image_id], (image_id, failures[image_id])
    assert "after 2 attempts" in failures["server_error"] and "after 2 attempts" in failures["slow"]
    # A 404 will not change: asked once. A 500 might: asked again.
    assert server.hits["/missing.jpg"] == 1 and server.hits["/server_error.jpg"] == 2
    assert server.hits["/page.jpg"] == 1
    # Only the good image, the CSV and the report: no partial or temporary files, nothing outside.
    assert sorted(path.name for path in out.iterdir()) == ["dataset.csv", FAILED_FILE, "good.png"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["dataset.csv", "out"]
    np.testing.assert_array_equal(read_png(out / "good.png"), expected_pixels(good, (0.1, 0.1, 0.9, 0.9)))


def test_a_transient_failure_is_retried_until_it_succeeds(server: LocalServer, tmp_path: Path) -> None:
    data = encode(make_image("RGB", (300, 300), seed=3), "JPEG")
    server.routes["/flaky.jpg"] = Route(body=data, fail_times=2)
    csv_path = write_dataset_csv(tmp_path / "d.csv", [("flaky", server.url("/flaky.jpg"), 0, 0, 1, 1)])

    summary = download_dataset(str(csv_path), tmp_path / "out", policy=RetryPolicy(attempts=3, backoff_s=0.01), progress=False)

    assert summary.downloaded == 1 and summary.failures == []
    assert server.hits["/flaky.jpg"] == 3


@pytest.mark.parametrize(
    "header, message",
    [
        (["ImageId", "URL", "x1", "y1", "x2"], "lacks column(s) y2"),
        (["Id", "Link"], "lacks column(s) ImageId, URL, x1, y1, x2, y2"),
    ],
)
def test_a_csv_without_the_required_columns_stops_with_exit_2(tmp_path: Path, header: list[str], message: str) -> None:
    csv_path = tmp_path / "bad.csv"
    csv_path.write_text(",".join(header) + "\n" + ",".join("1" for _ in header) + "\n")
    out = tmp_path / "out"

    result = CliRunner().invoke(download_group, ["dataset", str(csv_path), "--out", str(out), "--quiet"])

    assert result.exit_code == 2
    assert message in result.stderr and str(csv_path) in result.stderr
    assert not out.exists()


def test_an_unreachable_or_missing_csv_stops_with_exit_2(server: LocalServer, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        download_group, ["dataset", "dev", "--base-url", server.url("/nowhere/"), "--out", str(tmp_path / "o"), *FAST_OPTIONS]
    )
    assert result.exit_code == 2
    assert "cannot fetch the dataset CSV" in result.stderr and "/nowhere/dev_dataset.csv: HTTP 404" in result.stderr

    result = runner.invoke(download_group, ["dataset", str(tmp_path / "absent.csv"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "no such CSV file" in result.stderr
    result = runner.invoke(download_group, ["dataset", "some.csv", "--csv-url", "http://x/", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--csv-url only applies" in result.stderr
    assert not (tmp_path / "o").exists()


def test_official_dataset_by_name_from_a_mirror_with_mirrored_images(
    server: LocalServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flickr_url = "https://c1.staticflickr.com/9/8540/28821627444_0524012bdd_o.jpg"
    data = encode(make_image("RGB", (400, 300), seed=4), "JPEG")
    rows = [("0c7ac4a8c9dfa802", flickr_url, 0.0, 0.0, 0.871838111298, 1.0)]
    csv_bytes = write_dataset_csv(tmp_path / "source.csv", rows).read_bytes()
    server.routes["/mirror/dataset/dev_dataset.csv"] = Route(body=csv_bytes, content_type="text/csv")
    server.routes["/mirror/images/c1.staticflickr.com/9/8540/28821627444_0524012bdd_o.jpg"] = Route(body=data)
    monkeypatch.setenv("NIPS_ADV_DATASET_BASE_URL", server.url("/mirror/dataset"))
    out = tmp_path / "dev"

    result = CliRunner().invoke(
        download_group, ["dataset", "dev", "--out", str(out), "--image-mirror", server.url("/mirror/images/"), *FAST_OPTIONS]
    )

    assert result.exit_code == 0, result.output
    assert (out / "dev_dataset.csv").read_bytes() == csv_bytes
    np.testing.assert_array_equal(read_png(out / "0c7ac4a8c9dfa802.png"), expected_pixels(data, rows[0][2:]))
    assert mirrored_url(flickr_url, None) == flickr_url


def test_a_second_run_resumes_after_an_interrupted_one(server: LocalServer, tmp_path: Path) -> None:
    images = {name: encode(make_image("RGB", (200 + 10 * i, 180), seed=10 + i), "JPEG") for i, name in enumerate("abcd")}
    for name, data in images.items():
        server.routes[f"/{name}.jpg"] = Route(body=data)
    server.routes["/c.jpg"].status = 503  # down during the first run
    csv_path = write_dataset_csv(tmp_path / "d.csv", [(name, server.url(f"/{name}.jpg"), 0, 0, 1, 1) for name in images])
    out = tmp_path / "out"
    out.mkdir()
    # What a run killed mid-write leaves: the temporary file of an image not yet renamed into place.
    (out / ".b.png.x1y2z3.tmp").write_bytes(b"half a png")

    first = download_dataset(str(csv_path), out, jobs=2, policy=FAST, progress=False)

    assert (first.downloaded, first.present, [f.image_id for f in first.failures]) == (3, 0, ["c"])
    assert "HTTP 503" in read_failures(out / FAILED_FILE)["c"]
    assert not (out / ".b.png.x1y2z3.tmp").exists() and not (out / "c.png").exists()
    assert server.hits["/c.jpg"] == 2

    server.routes["/c.jpg"].status = 200
    second = download_dataset(str(csv_path), out, jobs=2, policy=FAST, progress=False)

    assert (second.downloaded, second.present, second.failures) == (1, 3, [])
    assert server.hits == Counter({"/a.jpg": 1, "/b.jpg": 1, "/c.jpg": 3, "/d.jpg": 1})
    assert not (out / FAILED_FILE).exists()  # a stale report would list an image that is now there
    for name, data in images.items():
        np.testing.assert_array_equal(read_png(out / f"{name}.png"), expected_pixels(data, (0, 0, 1, 1)))


def test_fetch_to_file_leaves_nothing_behind_on_a_truncated_body(server: LocalServer, tmp_path: Path) -> None:
    server.routes["/big.bin"] = Route(body=bytes(range(256)) * 1000, truncate_to=5000, content_type="application/gzip")
    with pytest.raises(FetchError, match="truncated body"):
        fetch_to_file(server.url("/big.bin"), tmp_path / "big.bin", policy=FAST)
    assert list(tmp_path.iterdir()) == []
    assert server.hits["/big.bin"] == 2


def test_retry_policy_backs_off_exponentially_up_to_a_cap() -> None:
    policy = RetryPolicy(attempts=6, backoff_s=0.5, max_backoff_s=3.0)
    assert [policy.wait_before(retry) for retry in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)


# --- checkpoints --------------------------------------------------------------------------------

VARIABLES = {
    "InceptionV3/Conv2d_1a_3x3/weights": np.arange(3 * 3 * 3 * 4, dtype=np.float32).reshape(3, 3, 3, 4) / 7.0,
    "InceptionV3/Logits/Conv2d_1c_1x1/biases": np.linspace(-1, 1, 11, dtype=np.float32),
    "global_step": np.int64(12345),
}


def save_checkpoint(prefix: Path, *, v1: bool) -> None:
    from nips_adv.models.tf_compat import tf, tf1

    prefix.parent.mkdir(parents=True, exist_ok=True)
    graph = tf.Graph()
    with graph.as_default():
        for name, value in VARIABLES.items():
            tf1.get_variable(name, initializer=value)
        version = tf1.train.SaverDef.V1 if v1 else tf1.train.SaverDef.V2
        saver = tf1.train.Saver(write_version=version)
        with tf1.Session(graph=graph) as session:
            session.run(tf1.global_variables_initializer())
            saver.save(session, str(prefix), write_meta_graph=False, write_state=False)


def read_checkpoint(prefix: Path) -> dict[str, np.ndarray]:
    from nips_adv.models.tf_compat import tf1

    reader = tf1.train.NewCheckpointReader(str(prefix))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_dtype_map()}


def make_tarball(path: Path, members: dict[str, Path | bytes]) -> bytes:
    with tarfile.open(path, "w:gz") as bundle:
        for name, content in members.items():
            if isinstance(content, Path):
                bundle.add(content, arcname=name)
            else:
                info = tarfile.TarInfo(name)
                info.size = len(content)
                bundle.addfile(info, io.BytesIO(content))
    return path.read_bytes()


@pytest.fixture(scope="module")
def tarballs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Generated stand-ins for the real tarballs: a V2 checkpoint, a V1 one and a hostile one."""
    work = tmp_path_factory.mktemp("tarballs")
    save_checkpoint(work / "v2" / "adv_inception_v3.ckpt", v1=False)
    save_checkpoint(work / "v1" / "inception_v3.ckpt", v1=True)
    v2_members = {path.name: path for path in sorted((work / "v2").glob("adv_inception_v3.ckpt.*"))}
    assert sorted(v2_members) == ["adv_inception_v3.ckpt.data-00000-of-00001", "adv_inception_v3.ckpt.index"]
    assert [path.name for path in (work / "v1").iterdir()] == ["inception_v3.ckpt"]  # V1: a single file
    return {
        "adv_inception_v3_2017_08_18.tar.gz": make_tarball(work / "adv.tar.gz", v2_members),
        "inception_v3_2016_08_28.tar.gz": make_tarball(work / "v1.tar.gz", {"inception_v3.ckpt": work / "v1" / "inception_v3.ckpt"}),
        "ens3_adv_inception_v3_2017_08_18.tar.gz": make_tarball(
            work / "evil.tar.gz", {"ens3_adv_inception_v3.ckpt.index": b"x", "../evil.txt": b"pwned"}
        ),
        "ens4_adv_inception_v3_2017_08_18.tar.gz": b"this is not gzip data" * 10,
    }


@pytest.fixture
def model_server(server: LocalServer, tarballs: dict[str, bytes]) -> LocalServer:
    for name, data in tarballs.items():
        server.routes[f"/models/{name}"] = Route(body=data, content_type="application/x-tar")
    return server


def test_v2_checkpoint_installed_where_the_registry_looks_under_its_original_names(
    model_server: LocalServer, tarballs: dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoints = tmp_path / "ckpt"
    monkeypatch.setenv("NIPS_ADV_CHECKPOINT_BASE_URL", model_server.url("/models"))
    monkeypatch.setenv("NIPS_ADV_CHECKPOINTS", str(checkpoints))
    runner = CliRunner()

    result = runner.invoke(download_group, ["checkpoint", "adv_inception_v3", *FAST_OPTIONS])

    assert result.exit_code == 0, result.output
    digest = hashlib.sha256(tarballs["adv_inception_v3_2017_08_18.tar.gz"]).hexdigest()
    assert f"is {digest} (not pinned" in result.stderr  # printed for the user to pin
    assert result.stdout.strip() == str(checkpoints / "adv_inception_v3.ckpt")
    assert sorted(path.name for path in checkpoints.iterdir()) == [
        "adv_inception_v3.ckpt.data-00000-of-00001",
        "adv_inception_v3.ckpt.index",
    ]
    from nips_adv.models.registry import get_model_spec

    assert get_model_spec("adv_inception_v3").default_checkpoint() == checkpoints / "adv_inception_v3.ckpt"
    original = read_checkpoint(checkpoints / "adv_inception_v3.ckpt")
    assert sorted(original) == sorted(VARIABLES)
    for name, value in VARIABLES.items():
        np.testing.assert_array_equal(original[name], value)

    # Installed already: a second call fetches nothing; pinning the right digest passes.
    again = runner.invoke(download_group, ["checkpoint", "adv_inception_v3", "--sha256", digest, *FAST_OPTIONS])
    assert again.exit_code == 0 and "already installed" in again.stderr
    assert model_server.hits["/models/adv_inception_v3_2017_08_18.tar.gz"] == 1
    forced = runner.invoke(download_group, ["checkpoint", "adv_inception_v3", "--force", "--sha256", digest.upper(), *FAST_OPTIONS])
    assert forced.exit_code == 0 and "SHA-256 verified" in forced.stderr


def test_v1_checkpoint_is_rewritten_as_v2(model_server: LocalServer, tmp_path: Path) -> None:
    lines: list[str] = []
    result = install_checkpoint(
        get_checkpoint_entry("inception_v3"), directory=tmp_path, base_url=model_server.url("/models/"),
        policy=FAST, progress=False, report=lines.append,
    )

    assert result.prefix == tmp_path / "inception_v3.ckpt" and result.downloaded
    assert sorted(path.name for path in tmp_path.iterdir()) == ["inception_v3.ckpt.data-00000-of-00001", "inception_v3.ckpt.index"]
    assert any("converting the V1 checkpoint" in line for line in lines)
    restored = read_checkpoint(result.prefix)
    assert sorted(restored) == sorted(VARIABLES)
    for name, value in VARIABLES.items():
        np.testing.assert_array_equal(restored[name], value)


def test_rewrite_checkpoint_copies_a_v1_checkpoint_as_v2_with_its_names(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "src" / "model.ckpt", v1=True)

    count = rewrite_checkpoint(tmp_path / "src" / "model.ckpt", tmp_path / "dst" / "ens3.ckpt")

    assert count == len(VARIABLES)
    assert sorted(path.name for path in (tmp_path / "dst").iterdir()) == ["ens3.ckpt.data-00000-of-00001", "ens3.ckpt.index"]
    restored = read_checkpoint(tmp_path / "dst" / "ens3.ckpt")
    assert sorted(restored) == sorted(VARIABLES)
    np.testing.assert_array_equal(restored["InceptionV3/Conv2d_1a_3x3/weights"], VARIABLES["InceptionV3/Conv2d_1a_3x3/weights"])
    assert restored["global_step"] == 12345

    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        rewrite_checkpoint(tmp_path / "junk.ckpt", tmp_path / "dst" / "junk.ckpt")
    assert sorted(path.name for path in (tmp_path / "dst").iterdir()) == ["ens3.ckpt.data-00000-of-00001", "ens3.ckpt.index"]


def test_a_checksum_mismatch_is_refused_and_nothing_installed(
    model_server: LocalServer, tmp_path: Path
) -> None:
    result = CliRunner().invoke(
        download_group,
        ["checkpoint", "adv_inception_v3", "--dir", str(tmp_path), "--base-url", model_server.url("/models"),
         "--sha256", "0" * 64, *FAST_OPTIONS],
    )
    assert result.exit_code == 2
    assert "does not match the expected " + "0" * 64 in result.stderr
    assert list(tmp_path.iterdir()) == []

    pinned = dataclasses.replace(get_checkpoint_entry("adv_inception_v3"), sha256="f" * 64)
    with pytest.raises(ChecksumMismatchError):
        install_checkpoint(pinned, directory=tmp_path, base_url=model_server.url("/models"), policy=FAST, progress=False,
                           report=lambda line: None)
    assert list(tmp_path.iterdir()) == []


def test_a_tarball_with_a_parent_member_is_refused(model_server: LocalServer, tmp_path: Path) -> None:
    target = tmp_path / "ckpt"
    result = CliRunner().invoke(
        download_group,
        ["checkpoint", "ens3_adv_inception_v3", "--dir", str(target), "--base-url", model_server.url("/models"), *FAST_OPTIONS],
    )
    assert result.exit_code == 2
    assert "'../evil.txt'" in result.stderr and ".." in result.stderr
    assert list(target.iterdir()) == []
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ckpt"]


def test_other_checkpoint_failures_stop_with_exit_2(model_server: LocalServer, tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["--dir", str(tmp_path), "--base-url", model_server.url("/models"), *FAST_OPTIONS]
    corrupt = runner.invoke(download_group, ["checkpoint", "ens4_adv_inception_v3", *base])
    assert corrupt.exit_code == 2 and "not a valid" in corrupt.stderr
    missing = runner.invoke(download_group, ["checkpoint", "inception_v4", *base])
    assert missing.exit_code == 2 and "inception_v4_2016_09_09.tar.gz: HTTP 404" in missing.stderr
    assert model_server.hits["/models/inception_v4_2016_09_09.tar.gz"] == 1  # permanent: not retried
    unknown = runner.invoke(download_group, ["checkpoint", "vgg_99", *base])
    assert unknown.exit_code == 2 and "unknown checkpoint 'vgg_99'; known: " in unknown.stderr
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(CheckpointDownloadError):
        get_checkpoint_entry("nope")


def test_list_shows_every_checkpoint_without_importing_tensorflow(console_env: dict[str, str]) -> None:
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from nips_adv.cli.main import main\n"
        "result = CliRunner().invoke(main, ['download', 'checkpoint', '--list'])\n"
        "print(result.output)\n"
        "assert result.exit_code == 0\n"
        "assert 'tensorflow' not in sys.modules\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=console_env, timeout=120,
                               cwd=Path(__file__).resolve().parents[1])
    assert completed.returncode == 0, completed.stderr
    from nips_adv.download.checkpoints import CATALOGUE

    for entry in CATALOGUE.values():
        line = next(line for line in completed.stdout.splitlines() if line.startswith(entry.name + " "))
        assert "MB" in line and entry.description in line
    assert "inception_v3" in completed.stdout and "[model ens3_adv_inception_v3]" in completed.stdout


def test_catalogue_names_match_the_registry_and_the_contract() -> None:
    from nips_adv.download.checkpoints import CATALOGUE
    from nips_adv.models.catalogue import CATALOGUE as MODELS
    from nips_adv.models.catalogue import list_models

    contract_files = {
        "inception_v3_2016_08_28.tar.gz", "adv_inception_v3_2017_08_18.tar.gz", "ens3_adv_inception_v3_2017_08_18.tar.gz",
        "ens4_adv_inception_v3_2017_08_18.tar.gz", "ens_adv_inception_resnet_v2_2017_08_18.tar.gz",
        "inception_resnet_v2_2016_08_30.tar.gz", "inception_v4_2016_09_09.tar.gz", "resnet_v2_101_2017_04_14.tar.gz",
        "resnet_v2_152_2017_04_14.tar.gz",
    }
    assert {entry.file_name for entry in CATALOGUE.values()} == contract_files
    for entry in CATALOGUE.values():
        assert entry.url == f"http://download.tensorflow.org/models/{entry.file_name}"
        assert entry.num_classes == 1001 and entry.archive_member.endswith(".ckpt")
        assert entry.sha256 is None or len(entry.sha256) == 64
        if entry.model is not None:
            assert entry.model in list_models()
    import nips_adv.models  # noqa: F401 (registers the models)

    for name in list_models():
        assert MODELS[name].model == name
        assert (MODELS[name].url is None) == (MODELS[name].package is not None)  # one way to get each
    assert set(CATALOGUE) == {name for name, entry in MODELS.items() if entry.url}
    assert len({entry.checkpoint_file for entry in MODELS.values()}) == len(MODELS)
