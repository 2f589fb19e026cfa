"""Jobs of one actor that wait in the same worker process are run as one batch.

An event posted alone is a job of one id, and so is the delivery of its messages. A job's fixed
cost (locks, loads, two commits: ~8 ms of CPU for one event here, against ~0.7 ms per event in a
job of hundreds) then caps a 2-core machine at ~90 events/s, and past that a backlog grows
without bound (bench/trigger.py). Coalescing lets the batches grow with the load instead: while
`runners` batches of an actor are running in a process, the jobs arriving meanwhile wait; the
next thread to run takes all of them (up to `max_items` ids) in one call. Under light load every
job runs alone at once, as before.

Each job still ends only when its own ids were processed, and fails if their batch failed, so
Dramatiq's acknowledgement, retries and time limits mean what they meant for a job alone. A
failed batch of several jobs is run again job by job, so one bad id fails only its own job.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)


class BatchFailed(RuntimeError):
    """Raised in a job whose ids were in a batch that another job's thread ran and that
    failed (the runner's own job raises the original exception)."""


@dataclass(eq=False)
class _Ticket:
    ids: list[int]
    done: bool = False
    error: BaseException | None = None
    ran_by: threading.Thread | None = None


class Coalescer:
    """Run `body(ids)` for the jobs of one actor, merged while others of it are running."""

    def __init__(
        self,
        name: str,
        body: Callable[[list[int]], None],
        *,
        runners: Callable[[], int],
        max_items: int,
    ) -> None:
        self.name = name
        self._body = body
        self._runners = runners
        self._max_items = max_items
        self._cond = threading.Condition()
        self._pending: deque[_Ticket] = deque()
        self._running = 0

    def __call__(self, ids: Sequence[int]) -> None:
        ticket = _Ticket([int(i) for i in ids])
        limit = max(1, self._runners())
        with self._cond:
            self._pending.append(ticket)
        while True:
            with self._cond:
                while not ticket.done and not (self._pending and self._running < limit):
                    self._cond.wait()
                if ticket.done:
                    break
                batch = self._take()
                self._running += 1
            try:
                self._run(batch)
            finally:
                with self._cond:
                    self._running -= 1
                    self._cond.notify_all()
        if ticket.error is None:
            return
        if ticket.ran_by is threading.current_thread():
            raise ticket.error
        failed = f"{self.name}: the batch holding this job failed: {ticket.error!r}"
        raise BatchFailed(failed) from ticket.error

    def _take(self) -> list[_Ticket]:
        """The oldest waiting jobs, up to max_items ids (always at least one job)."""
        batch = [self._pending.popleft()]
        size = len(batch[0].ids)
        while self._pending and size + len(self._pending[0].ids) <= self._max_items:
            ticket = self._pending.popleft()
            size += len(ticket.ids)
            batch.append(ticket)
        return batch

    def _run(self, batch: list[_Ticket]) -> None:
        """Run the batch; settle every ticket in it (done, with its error if it failed)."""
        try:
            self._body([i for ticket in batch for i in ticket.ids])
            errors: list[BaseException | None] = [None] * len(batch)
        except BaseException as err:  # handed to the jobs it belongs to
            if len(batch) == 1 or not isinstance(err, Exception):
                errors = [err] * len(batch)
            else:
                log.warning(
                    "%s: a batch of %d jobs failed (%s); running them one by one",
                    self.name,
                    len(batch),
                    err,
                )
                errors = [self._alone(ticket) for ticket in batch]
        with self._cond:
            for ticket, error in zip(batch, errors, strict=True):
                ticket.error = error
                ticket.ran_by = threading.current_thread()
                ticket.done = True

    def _alone(self, ticket: _Ticket) -> BaseException | None:
        try:
            self._body(ticket.ids)
        except Exception as err:  # the job's own failure
            return err
        return None
