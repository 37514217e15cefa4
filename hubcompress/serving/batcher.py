"""Dynamic batching: concurrent requests share one model call, and each caller gets its own rows back.

Requests queue up while the model runs; the next call takes as many as fit in ``max_batch_size``
rows, waiting at most ``max_delay_ms`` after the oldest one arrived for others to join. Token
tensors of different lengths are right-padded to the longest (the attention mask hides the
padding), and outputs that follow the sequence axis are cut back to each caller's length. The
model runs in a worker thread, so the event loop keeps accepting requests meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np

from hubcompress.serving.request_errors import ServerBusy

logger = logging.getLogger(__name__)

Feeds = Mapping[str, np.ndarray]
RunFn = Callable[[Feeds], dict[str, np.ndarray]]


@dataclass
class BatchStats:
    """Counters since start: how much work came in and how many model calls served it."""

    requests: int = 0
    rows: int = 0
    batches: int = 0
    largest_batch: int = 0
    failed_requests: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class _Job:
    feeds: dict[str, np.ndarray]
    future: asyncio.Future[dict[str, np.ndarray]]
    rows: int
    length: int | None
    queued_at: float = field(default_factory=time.monotonic)


class DynamicBatcher:
    """Group concurrent :meth:`submit` calls into calls of ``run`` on one worker thread.

    Args:
        run: takes a dict of ``[rows, ...]`` arrays, returns a dict of arrays with the same rows.
        max_batch_size: most rows per call of ``run``; 1 turns batching off.
        max_delay_ms: how long after the oldest queued request the batch closes, if not full.
        pad_values: pad value per input name; jobs whose inputs differ in length on axis 1 are
            merged only when every input has one (otherwise only equal shapes share a call).
        sequence_outputs: output name -> its axis that follows the inputs' axis 1; cut back to
            each job's own length after a padded call.
        max_queue_rows: queued rows beyond which :meth:`submit` raises :class:`ServerBusy`.

    Example:
        >>> import asyncio, numpy as np
        >>> def double(feeds):
        ...     return {"y": feeds["x"] * 2}
        >>> async def main():
        ...     batcher = DynamicBatcher(double, max_batch_size=8, max_delay_ms=5, pad_values={"x": 0},
        ...                              sequence_outputs={"y": 1})
        ...     await batcher.start()
        ...     short, long = np.array([[1]]), np.array([[1, 2, 3]])
        ...     results = await asyncio.gather(batcher.submit({"x": short}), batcher.submit({"x": long}))
        ...     await batcher.stop()
        ...     return [r["y"].tolist() for r in results], batcher.stats.batches
        >>> asyncio.run(main())
        ([[[2]], [[2, 4, 6]]], 1)
    """

    def __init__(
        self,
        run: RunFn,
        *,
        max_batch_size: int = 32,
        max_delay_ms: float = 5.0,
        pad_values: Mapping[str, int] | None = None,
        sequence_outputs: Mapping[str, int] | None = None,
        max_queue_rows: int = 4096,
    ) -> None:
        self._run = run
        self.max_batch_size = max(1, int(max_batch_size))
        self._max_delay_s = max(0.0, float(max_delay_ms)) / 1000.0
        self._pad_values = dict(pad_values or {})
        self._sequence_outputs = dict(sequence_outputs or {})
        self._max_queue_rows = max_queue_rows
        self._pending: deque[_Job] = deque()
        self._pending_rows = 0
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self.stats = BatchStats()

    @property
    def running(self) -> bool:
        """Whether the batching loop is up (the server is ready)."""
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Start the batching loop on the running event loop."""
        if self.running:
            return
        self._wakeup = asyncio.Event()
        # One worker: a second concurrent ONNX Runtime call would only fight the first for the same cores.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hubcompress-model")
        self._task = asyncio.create_task(self._loop(), name="hubcompress-batcher")

    async def stop(self) -> None:
        """Stop the loop; queued requests fail with :class:`ServerBusy`, a running call finishes."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        while self._pending:
            job = self._pending.popleft()
            if not job.future.done():
                job.future.set_exception(ServerBusy("the server is shutting down; retry on another instance"))
        self._pending_rows = 0
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def submit(self, feeds: Feeds) -> dict[str, np.ndarray]:
        """Queue ``feeds`` (arrays sharing their first axis) and wait for this job's own outputs."""
        if not self.running or self._wakeup is None:
            raise ServerBusy("the model is not ready yet (the batcher is not running)")
        arrays = {name: np.asarray(value) for name, value in feeds.items()}
        first = next(iter(arrays.values()))
        rows = int(first.shape[0])
        if self._pending_rows + rows > self._max_queue_rows:
            raise ServerBusy(f"{self._pending_rows} rows are already queued (limit {self._max_queue_rows}); retry later")
        job = _Job(arrays, asyncio.get_running_loop().create_future(), rows, first.shape[1] if first.ndim > 1 else None)
        self._pending.append(job)
        self._pending_rows += rows
        self.stats.requests += 1
        self._wakeup.set()
        return await job.future

    async def _loop(self) -> None:
        assert self._wakeup is not None
        while True:
            while not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
            await self._wait_for_company()
            jobs = self._take_batch()
            try:
                await self._execute(jobs)
            except Exception:  # never let one bad batch end the loop: that would hang every later caller
                logger.exception("unexpected failure while running a batch")
                self._fail(jobs, RuntimeError("internal error while running the batch"))

    async def _wait_for_company(self) -> None:
        """Wait until the batch is full or the oldest job has waited ``max_delay_ms``."""
        assert self._wakeup is not None
        loop_deadline = self._pending[0].queued_at + self._max_delay_s
        while self._pending_rows < self.max_batch_size:
            remaining = loop_deadline - time.monotonic()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return

    def _take_batch(self) -> list[_Job]:
        jobs = [self._pending.popleft()]
        rows = jobs[0].rows
        while self._pending and rows + self._pending[0].rows <= self.max_batch_size:
            jobs.append(self._pending.popleft())
            rows += jobs[-1].rows
        self._pending_rows -= rows
        # Callers that gave up (client gone) need no model time.
        return [job for job in jobs if not job.future.done()]

    async def _execute(self, jobs: list[_Job]) -> None:
        for group in self._mergeable_groups(jobs):
            try:
                outputs = await self._call(self._merge(group))
            except Exception as err:
                if len(group) == 1:
                    self._fail(group, err)
                    continue
                # Run each job alone so that one bad job fails only its own caller.
                logger.warning("a batch of %d requests failed (%s); retrying them one by one", len(group), err)
                for job in group:
                    try:
                        self._deliver([job], await self._call(job.feeds))
                    except Exception as single_err:
                        self._fail([job], single_err)
                continue
            self._deliver(group, outputs)

    async def _call(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = int(next(iter(feeds.values())).shape[0])
        self.stats.batches += 1
        self.stats.rows += rows
        self.stats.largest_batch = max(self.stats.largest_batch, rows)
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._run, feeds)

    def _mergeable_groups(self, jobs: list[_Job]) -> list[list[_Job]]:
        names = set(jobs[0].feeds) if jobs else set()
        if all(set(job.feeds) == names for job in jobs) and names <= set(self._pad_values):
            return [jobs] if jobs else []
        groups: dict[tuple[object, ...], list[_Job]] = {}
        for job in jobs:
            key = tuple(sorted((name, array.shape[1:], array.dtype.str) for name, array in job.feeds.items()))
            groups.setdefault(key, []).append(job)
        return list(groups.values())

    def _merge(self, jobs: list[_Job]) -> dict[str, np.ndarray]:
        if len(jobs) == 1:
            return jobs[0].feeds
        longest = max(job.length or 0 for job in jobs)
        merged: dict[str, np.ndarray] = {}
        for name in jobs[0].feeds:
            parts = []
            for job in jobs:
                array = job.feeds[name]
                if array.ndim > 1 and array.shape[1] < longest:
                    pad = [(0, 0)] * array.ndim
                    pad[1] = (0, longest - array.shape[1])
                    array = np.pad(array, pad, constant_values=self._pad_values[name])
                parts.append(array)
            merged[name] = np.concatenate(parts, axis=0)
        return merged

    def _deliver(self, jobs: list[_Job], outputs: dict[str, np.ndarray]) -> None:
        start = 0
        for job in jobs:
            own: dict[str, np.ndarray] = {}
            for name, array in outputs.items():
                part = array[start : start + job.rows]
                axis = self._sequence_outputs.get(name)
                if axis is not None and job.length is not None and part.ndim > axis:
                    part = part[(slice(None),) * axis + (slice(0, job.length),)]
                own[name] = part
            start += job.rows
            if not job.future.done():
                job.future.set_result(own)

    def _fail(self, jobs: list[_Job], error: BaseException) -> None:
        for job in jobs:
            self.stats.failed_requests += 1
            if not job.future.done():
                job.future.set_exception(error)
