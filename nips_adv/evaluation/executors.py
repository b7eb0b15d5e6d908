"""Run many work pieces: local threads (each piece is mostly a subprocess) or a Ray cluster.

Both executors call the same ``run_piece``. With Ray, every node must see the submissions,
the dataset and the intermediate folder at the same paths (a shared file system).
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .pieces import Piece, PieceRecord, run_piece
from .plan import RunSettings

EXECUTORS = ("local", "ray")


class ExecutorError(Exception):
    """The executor cannot run at all (Ray not installed, cluster unreachable)."""


def run_pieces(
    pieces: Sequence[Piece],
    settings: RunSettings,
    *,
    executor: str = "local",
    jobs: int = 1,
    address: str | None = None,
    on_start: Callable[[Piece], None] | None = None,
) -> Iterator[tuple[Piece, PieceRecord]]:
    """Run ``pieces`` (``jobs`` at a time) and yield (piece, done record) as each finishes."""
    if executor == "local":
        yield from _run_local(pieces, settings, jobs=jobs, on_start=on_start)
    elif executor == "ray":
        yield from _run_ray(pieces, settings, jobs=jobs, address=address, on_start=on_start)
    else:
        raise ExecutorError(f"unknown executor {executor!r}; expected one of {', '.join(EXECUTORS)}")


def _run_local(
    pieces: Sequence[Piece], settings: RunSettings, *, jobs: int, on_start: Callable[[Piece], None] | None
) -> Iterator[tuple[Piece, PieceRecord]]:
    def task(piece: Piece) -> PieceRecord:
        if on_start is not None:
            on_start(piece)
        return run_piece(piece, settings)

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(task, piece): piece for piece in pieces}
        try:
            for future in concurrent.futures.as_completed(futures):
                yield futures[future], future.result()
        except BaseException:
            # Pieces not started yet are dropped; running ones finish (their done.json is written).
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def _run_ray(
    pieces: Sequence[Piece], settings: RunSettings, *, jobs: int, address: str | None, on_start: Callable[[Piece], None] | None
) -> Iterator[tuple[Piece, PieceRecord]]:
    try:
        import ray
    except ImportError:
        raise ExecutorError("the ray executor needs Ray: pip install 'nips_adv[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        except Exception as error:  # Ray raises ConnectionError, RuntimeError, ValueError...
            raise ExecutorError(f"cannot connect to Ray at {address or 'a new local instance'}: {error}") from None
    remote_piece = ray.remote(num_cpus=1)(run_piece)
    try:
        waiting: dict[Any, Piece] = {}
        queue = list(pieces)
        # At most `jobs` pieces in flight: Ray schedules them on the cluster's CPUs.
        limit = max(1, jobs)
        while queue or waiting:
            while queue and len(waiting) < limit:
                piece = queue.pop(0)
                if on_start is not None:
                    on_start(piece)
                waiting[remote_piece.remote(piece, settings)] = piece
            ready, _ = ray.wait(list(waiting), num_returns=1)
            for reference in ready:
                yield waiting.pop(reference), ray.get(reference)
    finally:
        if started_here:
            ray.shutdown()
