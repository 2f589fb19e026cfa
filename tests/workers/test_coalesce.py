"""workers.coalesce: jobs of one actor that wait while others run are merged into one batch."""

from __future__ import annotations

import threading
import time

import pytest

from workers.coalesce import BatchFailed, Coalescer

DEADLINE = 30.0


class Body:
    """A batch body that records its calls; the first call blocks until released."""

    def __init__(self, fail_on: set[int] = frozenset()) -> None:
        self.calls: list[list[int]] = []
        self.release = threading.Event()
        self.started = threading.Event()
        self.fail_on = fail_on
        self.lock = threading.Lock()

    def __call__(self, ids: list[int]) -> None:
        with self.lock:
            self.calls.append(list(ids))
            first = len(self.calls) == 1
        if first:
            self.started.set()
            assert self.release.wait(DEADLINE)
        bad = self.fail_on & set(ids)
        if bad:
            raise ValueError(f"bad ids {sorted(bad)}")


def _call(coalescer: Coalescer, ids: list[int], results: dict[int, object]) -> threading.Thread:
    def run() -> None:
        try:
            coalescer(ids)
            results[ids[0]] = "ok"
        except BaseException as err:  # recorded for the assertions
            results[ids[0]] = err

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _wait_for(predicate, what: str) -> None:
    end = time.monotonic() + DEADLINE
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _waiting(coalescer: Coalescer) -> int:
    with coalescer._cond:
        return len(coalescer._pending)


def test_jobs_arriving_while_one_runs_are_merged_into_the_next_batch():
    body = Body()
    co = Coalescer("t", body, runners=lambda: 1, max_items=100)
    results: dict[int, object] = {}
    threads = [_call(co, [1], results)]
    assert body.started.wait(DEADLINE)
    threads += [_call(co, [i, i + 100], results) for i in (2, 3, 4)]
    _wait_for(lambda: _waiting(co) == 3, "three waiting jobs")
    assert body.calls == [[1]]  # nothing else ran meanwhile
    body.release.set()
    for t in threads:
        t.join(DEADLINE)
    assert body.calls == [[1], [2, 102, 3, 103, 4, 104]]
    assert results == {1: "ok", 2: "ok", 3: "ok", 4: "ok"}


def test_a_job_runs_at_once_while_fewer_than_runners_are_busy():
    body = Body()
    co = Coalescer("t", body, runners=lambda: 2, max_items=100)
    results: dict[int, object] = {}
    first = _call(co, [1], results)
    assert body.started.wait(DEADLINE)
    second = _call(co, [2], results)
    second.join(DEADLINE)  # ran beside the blocked first batch, alone
    assert results == {2: "ok"} and body.calls == [[1], [2]]
    body.release.set()
    first.join(DEADLINE)
    assert results[1] == "ok"


def test_batches_hold_at_most_max_items_ids_and_keep_arrival_order():
    body = Body()
    co = Coalescer("t", body, runners=lambda: 1, max_items=4)
    results: dict[int, object] = {}
    threads = [_call(co, [0], results)]
    assert body.started.wait(DEADLINE)
    for i in range(1, 6):
        threads.append(_call(co, [i * 10, i * 10 + 1], results))
        _wait_for(lambda n=i: _waiting(co) == n, f"{i} waiting")
    body.release.set()
    for t in threads:
        t.join(DEADLINE)
    assert body.calls == [[0], [10, 11, 20, 21], [30, 31, 40, 41], [50, 51]]
    assert all(r == "ok" for r in results.values()) and len(results) == 6


def test_a_failed_batch_is_run_again_job_by_job_and_fails_only_the_bad_job():
    body = Body(fail_on={30})
    co = Coalescer("t", body, runners=lambda: 1, max_items=100)
    results: dict[int, object] = {}
    threads = [_call(co, [1], results)]
    assert body.started.wait(DEADLINE)
    for i in (2, 3, 4):
        threads.append(_call(co, [i * 10], results))
    _wait_for(lambda: _waiting(co) == 3, "three waiting jobs")
    body.release.set()
    for t in threads:
        t.join(DEADLINE)
    assert body.calls == [[1], [20, 30, 40], [20], [30], [40]]
    assert results[1] == results[20] == results[40] == "ok"
    failure = results[30]
    # The job's own error, or (when another job's thread ran its batch) a wrapper holding it.
    if isinstance(failure, BatchFailed):
        failure = failure.__cause__
    assert isinstance(failure, ValueError) and "30" in str(failure)


def test_a_job_alone_raises_its_own_error():
    co = Coalescer("t", Body(fail_on={7}), runners=lambda: 1, max_items=10)
    co._body.release.set()
    with pytest.raises(ValueError, match="7"):
        co([7])
    co([8])  # the coalescer is still usable
