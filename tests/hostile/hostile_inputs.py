"""Builders of hostile inputs, made in the test that uses them (nothing large is committed)."""

from __future__ import annotations

import http.server
import struct
import threading
import zlib
from collections.abc import Callable
from pathlib import Path


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(width: int, height: int, *, rows: int | None = None) -> bytes:
    """A valid greyscale PNG of ``width`` x ``height`` black pixels, built row by row.

    The zero scanlines compress about 1000:1 and are fed to zlib a row at a time, so even a
    9000x9000 image (81 MB decoded) costs a few KB here. ``rows`` < height gives a header
    that declares more rows than the data holds (a bomb that is also truncated).
    """
    compressor = zlib.compressobj(9)
    scanline = b"\0" * (width + 1)  # filter byte 0, then one byte per pixel
    parts = [compressor.compress(scanline) for _ in range(height if rows is None else rows)]
    data = b"".join(parts) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


HUGE_SIZE = (100_000, 100_000)
"""Far above Pillow's limit (10 gigapixels): Pillow itself refuses it when opening."""
UNDER_PILLOW_LIMIT = (9_000, 9_000)
"""81 megapixels, under Pillow's 89.5: Pillow alone would decode it (81 MB grey, 243 MB RGB)."""


def write_bombs(folder: Path) -> list[Path]:
    """Two bombs in ``folder``: a header declaring 10 gigapixels, and a valid 81-megapixel PNG."""
    folder.mkdir(parents=True, exist_ok=True)
    huge = folder / "bomb_huge.png"
    huge.write_bytes(png_bytes(*HUGE_SIZE, rows=1))
    under = folder / "bomb_under_limit.png"
    under.write_bytes(png_bytes(*UNDER_PILLOW_LIMIT))
    return [huge, under]


class LocalServer:
    """An http.server on 127.0.0.1 in a daemon thread; ``routes`` maps a path to a handler function."""

    def __init__(self, routes: dict[str, Callable[[http.server.BaseHTTPRequestHandler], None]]) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                route = routes.get(self.path.split("?")[0])
                if route is None:
                    self.send_error(404)
                    return
                try:
                    route(self)
                except (BrokenPipeError, ConnectionResetError, OSError):
                    pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def send_body(handler: http.server.BaseHTTPRequestHandler, body: bytes, content_type: str = "image/png") -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)
