"""Fetching over HTTP(S) with the standard library: timeouts, retries with back-off, atomic files.

Proxies: urllib honours ``http_proxy``/``https_proxy``/``no_proxy`` from the environment.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import __version__

USER_AGENT = f"nips_adv/{__version__} (+https://github.com/cleverhans-lab/cleverhans)"
CHUNK_BYTES = 1 << 16

# Worth another try: the server or the network may recover. Other 4xx answers will not change.
TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class FetchError(Exception):
    """A URL that could not be fetched; the message is one line naming the URL and the reason.

    ``permanent`` is True when retrying cannot help (404, a page instead of an image...).
    """

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try one URL.

    - ``attempts``: requests in all (1 = no retry);
    - ``backoff_s``: the wait before retry k (k = 1, 2...) is ``backoff_s * 2 ** (k - 1)``,
      capped at ``max_backoff_s``;
    - ``timeout_s``: seconds a request may wait for the connection or for the next bytes.
    """

    attempts: int = 4
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {self.attempts}")
        if self.timeout_s <= 0 or self.backoff_s < 0:
            raise ValueError("timeout_s must be positive and backoff_s non-negative")

    def wait_before(self, retry: int) -> float:
        return min(self.backoff_s * 2 ** (retry - 1), self.max_backoff_s)


@dataclass(frozen=True)
class Response:
    """A complete body: ``final_url`` is where redirects ended."""

    data: bytes
    content_type: str
    final_url: str


def check_url(url: str) -> str:
    """``url`` if it is http(s); FetchError otherwise (a CSV must not make us read ``file://``)."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme not in ("http", "https"):
        raise FetchError(f"{url}: not an http(s) URL", permanent=True)
    return url


def join_url(base_url: str, name: str) -> str:
    """``name`` under the folder URL ``base_url`` (a missing trailing slash is added)."""
    return base_url.rstrip("/") + "/" + name


def _open(url: str, timeout_s: float) -> http.client.HTTPResponse:
    request = urllib.request.Request(check_url(url), headers={"User-Agent": USER_AGENT})
    return urllib.request.urlopen(request, timeout=timeout_s)  # noqa: S310 (scheme checked above)


def _describe(url: str, error: BaseException) -> FetchError:
    """Turn whatever urllib raised into a one-line FetchError that knows whether to retry."""
    if isinstance(error, FetchError):
        return error
    if isinstance(error, urllib.error.HTTPError):
        return FetchError(f"{url}: HTTP {error.code} {error.reason}", permanent=error.code not in TRANSIENT_STATUS)
    if isinstance(error, (socket.timeout, TimeoutError)):
        return FetchError(f"{url}: timed out")
    if isinstance(error, http.client.IncompleteRead):
        return FetchError(f"{url}: truncated body ({len(error.partial)} bytes received, {error.expected} more expected)")
    if isinstance(error, urllib.error.URLError):
        reason = error.reason
        if isinstance(reason, (socket.timeout, TimeoutError)):
            return FetchError(f"{url}: timed out")
        return FetchError(f"{url}: {reason}")
    if isinstance(error, ValueError):
        return FetchError(f"{url}: invalid URL ({error})", permanent=True)
    if isinstance(error, (http.client.HTTPException, OSError)):
        return FetchError(f"{url}: {type(error).__name__} {error}".rstrip())
    raise error


def with_retries(url: str, policy: RetryPolicy, attempt: Callable[[], object]) -> object:
    """Call ``attempt`` until it succeeds, a permanent error occurs or ``policy.attempts`` are spent."""
    last: FetchError | None = None
    for number in range(1, policy.attempts + 1):
        if number > 1:
            time.sleep(policy.wait_before(number - 1))
        try:
            return attempt()
        except Exception as error:  # noqa: BLE001 (_describe re-raises what it does not know)
            last = _describe(url, error)
            if last.permanent:
                raise last from None
    assert last is not None
    if policy.attempts > 1:
        raise FetchError(f"{last} (after {policy.attempts} attempts)") from None
    raise last from None


def _read_body(response: http.client.HTTPResponse, url: str, max_bytes: int | None, sink: Callable[[bytes], None]) -> int:
    """Stream the body into ``sink``; raise on a short body (urllib only checks when reading all at once)."""
    expected = response.getheader("Content-Length")
    expected_bytes = int(expected) if expected and expected.isdigit() else None
    if max_bytes is not None and expected_bytes is not None and expected_bytes > max_bytes:
        raise FetchError(f"{url}: body of {expected_bytes} bytes exceeds the limit of {max_bytes}", permanent=True)
    received = 0
    while True:
        chunk = response.read(CHUNK_BYTES)
        if not chunk:
            break
        received += len(chunk)
        if max_bytes is not None and received > max_bytes:
            raise FetchError(f"{url}: body exceeds the limit of {max_bytes} bytes", permanent=True)
        sink(chunk)
    if expected_bytes is not None and received < expected_bytes:
        raise http.client.IncompleteRead(b"\0" * received, expected_bytes - received)
    return received


def fetch_bytes(url: str, *, policy: RetryPolicy, max_bytes: int | None = None) -> Response:
    """GET ``url`` into memory, retrying transient failures; raises FetchError."""

    def attempt() -> Response:
        with _open(url, policy.timeout_s) as response:
            chunks: list[bytes] = []
            _read_body(response, url, max_bytes, chunks.append)
            return Response(
                data=b"".join(chunks),
                content_type=response.getheader("Content-Type", "") or "",
                final_url=response.geturl(),
            )

    return with_retries(url, policy, attempt)  # type: ignore[return-value]


def fetch_to_file(
    url: str,
    destination: Path,
    *,
    policy: RetryPolicy,
    on_progress: Callable[[int, int | None], None] | None = None,
) -> str:
    """GET ``url`` into ``destination`` atomically and return the body's SHA-256 (hex).

    The body goes to a hidden temporary file beside ``destination`` that is renamed only
    when complete; on any failure it is removed. ``on_progress(received_bytes, total_or_None)``
    is called per chunk with the bytes received so far (a retry starts again from zero).
    """
    destination = Path(destination)

    def attempt() -> str:
        handle, temporary = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".part", dir=destination.parent)
        digest = hashlib.sha256()
        try:
            with os.fdopen(handle, "wb") as stream, _open(url, policy.timeout_s) as response:
                length = response.getheader("Content-Length")
                total = int(length) if length and length.isdigit() else None

                received = 0

                def sink(chunk: bytes) -> None:
                    nonlocal received
                    stream.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    if on_progress is not None:
                        on_progress(received, total)

                _read_body(response, url, None, sink)
            os.replace(temporary, destination)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return digest.hexdigest()

    return with_retries(url, policy, attempt)  # type: ignore[return-value]


def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
