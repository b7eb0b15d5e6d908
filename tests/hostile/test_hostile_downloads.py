"""Downloads that never end, and redirects to other schemes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hostile_inputs import LocalServer

from nips_adv.download.http import FetchError, RetryPolicy, fetch_bytes, fetch_to_file


def trickle(handler) -> None:
    # Declares 1000 bytes and sends one every 0.2 s: each read is quick, the whole never ends.
    handler.send_response(200)
    handler.send_header("Content-Length", "1000")
    handler.end_headers()
    for _ in range(1000):
        handler.wfile.write(b"x")
        handler.wfile.flush()
        time.sleep(0.2)


def trickle_headers(handler) -> None:
    handler.wfile.write(b"HTTP/1.0 200 OK\r\n")
    for _ in range(1000):
        handler.wfile.write(b"X-Slow: y\r\n")
        handler.wfile.flush()
        time.sleep(0.2)


def redirect_to(target: str):
    def handle(handler) -> None:
        handler.send_response(302)
        handler.send_header("Location", target)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return handle


@pytest.fixture
def server():
    server = LocalServer(
        {
            "/trickle": trickle,
            "/trickle-headers": trickle_headers,
            "/to-file": redirect_to("file:///etc/passwd"),
            "/to-ftp": redirect_to("ftp://127.0.0.1/x"),
        }
    )
    yield server
    server.close()


@pytest.mark.parametrize("path", ["/trickle", "/trickle-headers"])
def test_a_trickling_server_is_cut_off_at_the_total_deadline(server: LocalServer, tmp_path: Path, path: str) -> None:
    policy = RetryPolicy(attempts=3, backoff_s=0, timeout_s=5, deadline_s=1.5)
    started = time.monotonic()
    with pytest.raises(FetchError, match="total deadline"):
        fetch_bytes(server.url(path), policy=policy)
    with pytest.raises(FetchError, match="total deadline"):
        fetch_to_file(server.url(path), tmp_path / "file", policy=policy)
    assert time.monotonic() - started < 8
    assert list(tmp_path.iterdir()) == []  # no partial file left


@pytest.mark.parametrize("path", ["/to-file", "/to-ftp"])
def test_a_redirect_to_another_scheme_is_refused(server: LocalServer, path: str) -> None:
    with pytest.raises(FetchError, match=r"not an http\(s\) URL|Redirection to url .* is not allowed") as refused:
        fetch_bytes(server.url(path), policy=RetryPolicy(attempts=3, backoff_s=0))
    assert refused.value.permanent
