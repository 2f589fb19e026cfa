"""Jobs deferred until commit: id-list jobs of one transaction are merged into few."""

from __future__ import annotations

from app.db import MERGED_ACTORS, _merged


def test_id_list_jobs_of_one_transaction_are_merged_up_to_their_batch_size():
    batch = MERGED_ACTORS["deliver_messages"]
    jobs = [("deliver_messages", ([i],)) for i in range(batch + 3)]
    jobs += [("fan_out_send", (7,)), ("deliver_messages", ([0, 1],))]  # repeats sent once
    merged = _merged(jobs)
    assert merged[0] == ("fan_out_send", (7,))
    assert [len(args[0]) for name, args in merged[1:]] == [batch, 3]
    assert [i for _, args in merged[1:] for i in args[0]] == list(range(batch + 3))


def test_other_jobs_keep_their_order_and_arguments():
    jobs = [("sweep", ()), ("fan_out_send", (1,)), ("fan_out_send", (1,))]
    assert _merged(jobs) == jobs
