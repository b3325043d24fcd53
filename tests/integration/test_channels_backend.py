"""ChannelsBackend end to end: in-process enqueue, real runworker processes."""

import asyncio
import os
from datetime import timedelta

import pytest
from django.db import transaction
from django.tasks import TaskResultStatus
from django.utils import timezone

from tasks.models import TaskRecord
from tests import tasks
from tests.support import await_finished, wait_finished, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_enqueue_runs_on_the_worker_and_returns_its_value(worker):
    # Given a worker on the default queue
    worker("default")
    # When a task is enqueued from this (the web's) process
    result = tasks.add.enqueue(2, 3)
    # Then the record is READY at once and SUCCESSFUL with the return value
    assert result.status == TaskResultStatus.READY
    wait_finished(result)
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 5
    assert len(result.worker_ids) == 1
    assert tasks.add.get_result(result.id).return_value == 5


def test_message_on_the_channel_is_small(redis_server):
    # Given no worker, a task enqueued with large arguments
    result = tasks.record_run.enqueue("x" * 10_000, "big")
    # Then the channel holds only the wake-up message
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    message = async_to_sync(get_channel_layer().receive)("default")
    assert message == {"type": "task.run", "id": result.id}


def test_exception_marks_failed_with_traceback_and_the_worker_goes_on(worker):
    process = worker("default")
    failed = tasks.explode.enqueue("boom")
    after = tasks.add.enqueue(1, 1)
    wait_finished(failed)
    wait_finished(after)
    assert failed.status == TaskResultStatus.FAILED
    assert failed.errors[-1].exception_class_path == "builtins.ValueError"
    assert "ValueError: boom" in failed.errors[-1].traceback
    assert after.status == TaskResultStatus.SUCCESSFUL
    assert process.alive()


def test_unserializable_return_value_fails_clearly(worker):
    worker("default")
    result = wait_finished(tasks.bad_return.enqueue())
    assert result.status == TaskResultStatus.FAILED
    assert result.errors[-1].exception_class is TypeError
    assert "Unsupported type" in result.errors[-1].traceback
    reason = result.errors[-1].traceback.strip().splitlines()[-1]
    assert reason == (
        "The task's return value must be JSON data "
        "(dict, list, str, int, float, bool or None)."
    )


def test_coroutine_task_runs_on_the_worker_loop(worker):
    worker("default")
    result = wait_finished(tasks.async_add.enqueue(20, 22))
    assert result.return_value == 42


def test_progress_is_stored(worker):
    worker("default")
    result = wait_finished(tasks.with_progress.enqueue(4))
    record = TaskRecord.objects.get(pk=result.id)
    assert record.progress == 1.0
    assert record.progress_message == "step 4 of 4"


def test_rolled_back_transaction_sends_nothing(worker, tmp_path):
    # Given a worker, and an enqueue inside a transaction that rolls back
    worker("default")
    marker = str(tmp_path / "runs")
    with pytest.raises(RuntimeError), transaction.atomic():
        tasks.record_run.enqueue(marker, "rolled-back")
        raise RuntimeError("roll back")
    # When a later task has run (the queue is FIFO)
    wait_finished(tasks.record_run.enqueue(marker, "committed"))
    # Then only the committed one ran, and no record of the other exists
    assert [line.split()[0] for line in tasks.runs(marker)] == ["committed"]
    assert TaskRecord.objects.count() == 1


def test_run_after_is_honoured(worker, reconciler, tmp_path):
    worker("default")
    reconciler()
    due = timezone.now() + timedelta(seconds=2)
    result = tasks.add.using(run_after=due).enqueue(1, 2)
    wait_finished(result)
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.started_at >= due


def test_every_slot_runs_a_task_at_once(worker, tmp_path):
    # Given one worker with more slots than asyncio's default thread pool
    # has threads on this machine (min(32, CPUs + 4))
    slots = min(32, (os.cpu_count() or 1) + 4) + 2
    worker("default", concurrency=slots)
    # When as many tasks are queued, each waiting until all have started
    marker = str(tmp_path / "met")
    results = [tasks.meet.enqueue(marker, str(n), slots) for n in range(slots)]
    # Then all ran at the same time and met
    for result in results:
        assert wait_finished(result, timeout=60).status == TaskResultStatus.SUCCESSFUL


def test_another_layer_is_read_through_its_own_receive(redis_server, monkeypatch):
    # Given a worker (in this process) on a layer it cannot pop directly,
    # as with a customised or non-Redis layer
    from asgiref.sync import sync_to_async

    from tasks import redis_layer
    from tasks.worker import Worker

    monkeypatch.setattr(redis_layer, "usable", lambda *args: False)
    worker = Worker(["default"], concurrency=2)
    results = []

    def enqueue_and_wait():
        results.extend([tasks.add.enqueue(1, 2), tasks.async_add.enqueue(3, 4)])
        for result in results:
            wait_finished(result)

    async def scenario():
        serving = asyncio.ensure_future(worker.serve())
        await sync_to_async(enqueue_and_wait)()
        worker.stop()
        await asyncio.wait_for(serving, timeout=10)

    # When it serves a sync and a coroutine task, then is stopped
    asyncio.run(scenario())
    # Then both ran, through the layer's receive, and it stopped
    assert [result.return_value for result in results] == [3, 7]
    assert worker.processed == 2


def test_duplicate_message_runs_once(worker, tmp_path):
    # Given a task whose wake-up message is delivered three times
    marker = str(tmp_path / "runs")
    worker("default", concurrency=2)
    worker("default", name="runworker-2")
    result = tasks.slow_record_run.enqueue(marker, "once", 0.5)
    record = TaskRecord.objects.get(pk=result.id)
    from django.tasks import task_backends

    from tasks.backends import ChannelsBackend

    backend: ChannelsBackend = task_backends["default"]
    backend.deliver(record)
    backend.deliver(record)
    wait_finished(result)
    # Then it ran exactly once
    assert wait_finished(tasks.add.enqueue(0, 0)).status == TaskResultStatus.SUCCESSFUL
    assert len(tasks.runs(marker)) == 1
    assert result.worker_ids and len(result.worker_ids) == 1


def test_unknown_queue_is_rejected_at_definition():
    from django.tasks.exceptions import InvalidTask

    with pytest.raises(InvalidTask, match="Queue 'nope' is not valid"):
        tasks.add.using(queue_name="nope")


async def test_aenqueue_from_async_code(worker):
    from asgiref.sync import sync_to_async

    await sync_to_async(worker)("default")
    result = await tasks.add.aenqueue(4, 5)
    assert result.status == TaskResultStatus.READY
    await sync_to_async(wait_finished)(result)
    assert result.return_value == 9


def test_script_send_matches_the_layers_own_format(redis_server):
    # Given a message sent from sync code (one Lua call, not the layer's send)
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    from tasks import transport

    transport.send("default", {"type": "task.run", "id": "abc"})
    # Then channels-redis' own receive reads it back unchanged
    layer = get_channel_layer()
    assert transport.redis_layer.usable(layer, ["default"])
    assert async_to_sync(layer.receive)("default") == {"type": "task.run", "id": "abc"}


def test_script_send_recovers_from_a_forgotten_script_and_a_dropped_connection(
    redis_server,
):
    # Given this thread's kept connection, as after a Redis restart: the
    # script cache flushed, then every client connection dropped
    import redis
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    from tasks import transport

    admin = redis.Redis.from_url(redis_server.url)
    transport.send("default", {"type": "task.run", "id": "1"})
    admin.script_flush()
    transport.send("default", {"type": "task.run", "id": "2"})
    admin.client_kill_filter(_type="normal", skipme=True)
    transport.send("default", {"type": "task.run", "id": "3"})

    # Then every send arrived, in order
    receive = async_to_sync(get_channel_layer().receive)
    assert [receive("default")["id"] for _ in range(3)] == ["1", "2", "3"]


def test_a_group_event_after_redis_dropped_its_clients_still_arrives(redis_server):
    # Given a channel in a group, and this process's kept publishing
    # connection, which Redis then drops (as at a restart)
    import redis
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    from tasks import transport

    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)("tests.dropped", channel)
    transport.group_send("tests.dropped", {"type": "test.event", "n": 1})
    redis.Redis.from_url(redis_server.url).client_kill_filter(
        _type="normal", skipme=True
    )
    # When the next event is published
    transport.group_send("tests.dropped", {"type": "test.event", "n": 2})

    # Then both arrived
    async def receive():
        return (await asyncio.wait_for(layer.receive(channel), 5))["n"]

    assert [async_to_sync(receive)() for _ in range(2)] == [1, 2]


def test_the_procfile_worker_serves_every_channels_queue(start_process, settings):
    # Given the worker `make run` starts
    process = start_process("worker")
    process.wait_ready("listening on", timeout=30, message="the Procfile worker")
    # When a task is enqueued on each queue of each Channels backend
    results = [
        tasks.add.using(backend=alias, queue_name=queue).enqueue(2, 3)
        for alias, config in settings.TASKS.items()
        if config["BACKEND"] == "tasks.backends.ChannelsBackend"
        for queue in config["QUEUES"]
    ]
    # Then it runs them all (a task on a queue nobody serves would wait forever)
    assert len(results) >= 2
    assert [wait_finished(result).return_value for result in results] == [5] * len(
        results
    )


def test_one_worker_serves_several_queues(worker):
    worker("thumbnailer", "default")
    first = tasks.add.using(queue_name="thumbnailer").enqueue(1, 2)
    second = tasks.add.enqueue(3, 4)
    assert wait_finished(first).return_value == 3
    assert wait_finished(second).return_value == 7
    assert first.worker_ids == second.worker_ids


def test_a_task_leaving_the_interpreter_fails_and_every_slot_goes_on(worker, tmp_path):
    # Given a worker with two slots, one of them busy with a slow task
    done, started = str(tmp_path / "done"), str(tmp_path / "started")
    process = worker("default", concurrency=2)
    slow = tasks.slow_record_run.enqueue(done, "slow", 1.5, started)
    wait_for(lambda: tasks.runs(started), message="the slow task to start")
    # When the other slot runs tasks that exit, each its own way
    leaving = [tasks.leave.enqueue(how) for how in tasks.EXITS]
    # Then each attempt fails with its own exception and traceback, no retry
    for how, result in zip(tasks.EXITS, leaving, strict=True):
        wait_finished(result)
        assert result.status == TaskResultStatus.FAILED
        assert result.attempts == 1
        assert result.errors[0].exception_class_path == tasks.EXITS[how]
        assert "Traceback (most recent call last)" in result.errors[0].traceback
    # And the slow task finished in the same worker process, which goes on
    assert wait_finished(slow).status == TaskResultStatus.SUCCESSFUL
    assert {r.worker_ids[0] for r in [slow, *leaving]} == set(slow.worker_ids)
    assert wait_finished(tasks.add.enqueue(1, 1)).worker_ids == slow.worker_ids
    assert process.alive()


def test_the_result_enqueue_returns_equals_the_stored_one(redis_server):
    # Given arguments that JSON stores differently (int keys, tuples)
    result = tasks.record_run.enqueue({1: "a"}, key=("x", 2))
    # Then the returned result already holds what is stored
    assert result.args == [{"1": "a"}]
    assert result.kwargs == {"key": ["x", 2]}
    assert tasks.record_run.get_result(result.id) == result


def test_aenqueue_delivers_when_the_transaction_commits(redis_server):
    # Given async code called from a transaction (as under ATOMIC_REQUESTS)
    from asgiref.sync import async_to_sync

    from tasks import transport

    parked = tasks.add.using(queue_name="thumbnailer")  # no worker here
    with transaction.atomic():
        result = async_to_sync(parked.aenqueue)(1, 2)
        # Then nothing is sent before the commit
        assert transport.depths(["thumbnailer"]) == {"thumbnailer": 0}
        assert TaskRecord.objects.filter(pk=result.id).exists()
    assert transport.depths(["thumbnailer"]) == {"thumbnailer": 1}


async def test_the_asgi_channel_route_runs_the_task_a_message_names(redis_server):
    # Given a task, and the project's ASGI app on the "default" channel
    from asgiref.sync import sync_to_async
    from channels.testing import ApplicationCommunicator

    from project.asgi import application

    result = await sync_to_async(tasks.add.enqueue)(20, 22)
    app = ApplicationCommunicator(
        application, {"type": "channel", "channel": "default"}
    )
    # When the app receives the task's message (as a stock worker would pass it)
    await app.send_input({"type": "task.run", "id": result.id})
    # Then it has claimed and run it
    await await_finished(result)
    assert result.return_value == 42
    assert result.worker_ids[0].startswith("consumer:")
    app.stop()
