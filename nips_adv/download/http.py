"""Fetching over HTTP(S) with the standard library: timeouts, retries with back-off, atomic files.

Proxies: urllib honours ``http_proxy``/``https_proxy``/``no_proxy`` from the environment.

Two clocks bound a fetch: ``timeout_s`` per socket operation (a silent server), and a total
deadline per file (a server trickling a byte a second never trips the first). At the deadline a
watchdog shuts the connection's socket down, whatever urllib is blocked in (headers or body).
Redirects are followed only to http(s) URLs.
"""

from __future__ import annotations

import hashlib
import http.client
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..contract.atomic import atomic_write

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
    - ``timeout_s``: seconds a request may wait for the connection or for the next bytes;
    - ``deadline_s``: seconds one file may take in all, every attempt and wait included (None:
      the caller's default, DEFAULT_DEADLINE_S for checkpoints, less for dataset images).
    """

    attempts: int = 4
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    timeout_s: float = 30.0
    deadline_s: float | None = None

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {self.attempts}")
        if self.timeout_s <= 0 or self.backoff_s < 0:
            raise ValueError("timeout_s must be positive and backoff_s non-negative")
        if self.deadline_s is not None and not self.deadline_s > 0:
            raise ValueError(f"deadline_s must be positive, got {self.deadline_s}")

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


DEFAULT_DEADLINE_S = 1800.0
"""Total seconds for one file when the policy names none: a 100 MB checkpoint at 60 KB/s."""


class _DeadlineExceeded(Exception):
    pass


class _Watchdog:
    """Shuts down the sockets opened in this thread once ``deadline`` (time.monotonic) passes."""

    current = threading.local()

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.fired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._fire)
        self._timer.daemon = True

    def __enter__(self) -> _Watchdog:
        _Watchdog.current.value = self
        self._timer.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._timer.cancel()
        _Watchdog.current.value = None

    def watch(self, sock: socket.socket | None) -> None:
        with self._lock:
            if sock is None:
                return
            self._sockets.append(sock)
            if self.fired:
                self._shut(sock)

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            for sock in self._sockets:
                self._shut(sock)

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def check(self) -> None:
        if self.fired or time.monotonic() >= self.deadline:
            raise _DeadlineExceeded


def _watched(connection_class: type) -> type:
    class Watched(connection_class):  # type: ignore[misc, valid-type]
        def connect(self) -> None:
            super().connect()
            watchdog = getattr(_Watchdog.current, "value", None)
            if watchdog is not None:
                watchdog.watch(self.sock)

    return Watched


class _HTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, request):
        return self.do_open(_watched(http.client.HTTPConnection), request)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, request):
        return self.do_open(_watched(http.client.HTTPSConnection), request, context=self._context)


class _RedirectHandler(urllib.request.HTTPRedirectHandler):
    """Follows redirects to http(s) only: a server must not send us to ``file://`` or ``ftp://``."""

    def redirect_request(self, request, fp, code, msg, headers, new_url):
        scheme = new_url.split(":", 1)[0].lower() if ":" in new_url else ""
        if scheme not in ("http", "https"):
            raise FetchError(f"{request.full_url}: redirected to {new_url!r:.200}, not an http(s) URL", permanent=True)
        return super().redirect_request(request, fp, code, msg, headers, new_url)


_OPENER = urllib.request.build_opener(_HTTPHandler, _HTTPSHandler, _RedirectHandler)


def _open(url: str, timeout_s: float) -> http.client.HTTPResponse:
    request = urllib.request.Request(check_url(url), headers={"User-Agent": USER_AGENT})
    return _OPENER.open(request, timeout=timeout_s)


def _describe(url: str, error: BaseException) -> FetchError:
    """Turn whatever urllib raised into a one-line FetchError that knows whether to retry."""
    if isinstance(error, FetchError):
        return error
    if isinstance(error, _DeadlineExceeded):
        return FetchError(f"{url}: not complete within the total deadline")
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


def with_retries(url: str, policy: RetryPolicy, attempt: Callable[[], object], *, deadline_s: float | None = None) -> object:
    """Call ``attempt`` until it succeeds, a permanent error occurs or ``policy.attempts`` are spent.

    Everything, waits included, ends at the deadline: ``policy.deadline_s``, else ``deadline_s``,
    else DEFAULT_DEADLINE_S seconds from now.
    """
    total = policy.deadline_s or deadline_s or DEFAULT_DEADLINE_S
    deadline = time.monotonic() + total
    last: FetchError | None = None
    for number in range(1, policy.attempts + 1):
        if number > 1:
            wait = policy.wait_before(number - 1)
            if time.monotonic() + wait >= deadline:
                break
            time.sleep(wait)
        try:
            with _Watchdog(deadline):
                return attempt()
        except Exception as error:  # noqa: BLE001 (_describe re-raises what it does not know)
            watchdog_fired = time.monotonic() >= deadline
            last = _describe(url, _DeadlineExceeded() if watchdog_fired else error)
            if last.permanent:
                raise last from None
            if watchdog_fired:
                raise FetchError(f"{url}: not complete within the total deadline of {total:g} s") from None
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
    watchdog = getattr(_Watchdog.current, "value", None)
    while True:
        # read1: what has arrived (a read of CHUNK_BYTES would wait for all of them).
        chunk = response.read1(CHUNK_BYTES)
        if watchdog is not None:
            watchdog.check()
        if not chunk:
            break
        received += len(chunk)
        if max_bytes is not None and received > max_bytes:
            raise FetchError(f"{url}: body exceeds the limit of {max_bytes} bytes", permanent=True)
        sink(chunk)
    if expected_bytes is not None and received < expected_bytes:
        raise http.client.IncompleteRead(b"\0" * received, expected_bytes - received)
    return received


def fetch_bytes(url: str, *, policy: RetryPolicy, max_bytes: int | None = None, deadline_s: float | None = None) -> Response:
    """GET ``url`` into memory, retrying transient failures, within a total deadline; raises FetchError.

    ``deadline_s`` is the default when ``policy.deadline_s`` is None (see with_retries).
    """

    def attempt() -> Response:
        with _open(url, policy.timeout_s) as response:
            chunks: list[bytes] = []
            _read_body(response, url, max_bytes, chunks.append)
            return Response(
                data=b"".join(chunks),
                content_type=response.getheader("Content-Type", "") or "",
                final_url=response.geturl(),
            )

    return with_retries(url, policy, attempt, deadline_s=deadline_s)  # type: ignore[return-value]


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
        digest = hashlib.sha256()
        with atomic_write(destination, "wb") as stream, _open(url, policy.timeout_s) as response:
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
        return digest.hexdigest()

    return with_retries(url, policy, attempt)  # type: ignore[return-value]


def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
