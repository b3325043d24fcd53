"""Django's signal contract across processes: a task's task_enqueued (sent
where it is enqueued) comes before its task_started (sent by the worker)."""

import pytest
from django.tasks.signals import task_enqueued

from tests import tasks
from tests.support import wait_finished

pytestmark = pytest.mark.django_db(transaction=True)


def test_task_enqueued_is_sent_before_task_started_on_both_lanes(
    worker, celery_worker, tmp_path
):
    # Given idle, fast workers on both lanes, logging each task_started
    log = str(tmp_path / "signals")
    worker("default", concurrency=4, TEST_SIGNAL_LOG=log)
    celery_worker(concurrency=2, TEST_SIGNAL_LOG=log)
    # When many tasks are enqueued one by one, outside any transaction, with
    # this process logging each task_enqueued to the same file
    receiver = tasks.signal_logger(log, "enqueued")
    task_enqueued.connect(receiver, weak=False)
    try:
        results = []
        for i in range(150):
            results.append(tasks.add.enqueue(i, i))
            if i % 3 == 0:
                results.append(tasks.g_add.enqueue(i, i))
    finally:
        task_enqueued.disconnect(receiver)
    for result in results:
        wait_finished(result)
    # Then every task's task_enqueued came first
    position = {}
    for index, line in enumerate(tasks.runs(log)):
        position.setdefault(tuple(line.split()), index)
    early = [
        result.id
        for result in results
        if position[("started", result.id)] < position[("enqueued", result.id)]
    ]
    assert early == [], f"{len(early)} of {len(results)} started before enqueued"
