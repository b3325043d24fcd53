"""Concurrency limits: at most N attempts of a task (per key, or of a queue)
RUNNING at once across every worker process; the others wait READY."""

import dataclasses
import threading

import pytest
from django.tasks import TaskResultStatus
from django.tasks.exceptions import InvalidTask

import tasks as job_system
from tasks import lifecycle
from tasks.models import TaskRecord
from tasks.reconciler import Reconciler
from tests import tasks
from tests.support import Repeating, wait_finished

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("redis_server"),
]

Status = TaskResultStatus
TARGETS = (("default", "default"),)


def peak(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant."""
    edges = sorted(
        [(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals]
    )
    running = highest = 0
    for _, step in edges:
        running += step
        highest = max(highest, running)
    return highest


def ran(path) -> list[tuple[float, float]]:
    return [tuple(map(float, line.split()[:2])) for line in tasks.runs(str(path))]


class RunningSampler(Repeating):
    """Samples the number of RUNNING records of a task, in a thread."""

    def __init__(self, task_path: str) -> None:
        from django.db import connection

        self.task_path, self.highest = task_path, 0
        # (connection resolves to the sampling thread's own when called there)
        super().__init__(self._sample, 0.02, finish=lambda: connection.close())

    def _sample(self) -> None:
        running = TaskRecord.objects.running().filter(task_path=self.task_path)
        self.highest = max(self.highest, running.count())


def test_claims_stop_at_the_limit_and_resume_when_a_slot_frees():
    results = [tasks.limited_nap.enqueue("/dev/null", 0) for _ in range(3)]
    first = lifecycle.claim_next(TARGETS, "host:1:a")
    second = lifecycle.claim_next(TARGETS, "host:1:b")
    assert first and second
    # The third waits READY: neither a claim of the queue nor of its id takes it
    assert lifecycle.claim_next(TARGETS, "host:1:c") is None
    assert lifecycle.claim(results[2].id, "host:1:c") is None
    assert TaskRecord.objects.get(pk=results[2].id).status == Status.READY
    # Other tasks of the queue are not held up
    other = tasks.add.enqueue(1, 2)
    assert lifecycle.claim_next(TARGETS, "host:1:c").id == other.id
    # When one finishes, the third is claimed
    assert lifecycle.succeed(first, 0)
    assert lifecycle.claim_next(TARGETS, "host:1:c").id == results[2].id


def test_claims_racing_in_threads_never_exceed_the_limit():
    # Given twenty waiting records of a task limited to two
    for _ in range(20):
        tasks.limited_nap.enqueue("/dev/null", 0)
    start = threading.Barrier(8)

    def claim(n: int) -> None:
        from django.db import connection

        try:
            start.wait()
            for _ in range(3):
                lifecycle.claim_next(TARGETS, f"host:1:{n}")
        finally:
            connection.close()

    # When eight threads (eight connections) claim at once, three times each
    threads = [threading.Thread(target=claim, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then exactly two are RUNNING
    assert TaskRecord.objects.running().count() == 2


def test_a_dead_workers_slot_frees_when_its_heartbeat_goes_stale(settings):
    for _ in range(3):
        tasks.limited_nap.enqueue("/dev/null", 0)
    held = [lifecycle.claim_next(TARGETS, f"host:1:{n}") for n in range(2)]
    assert all(held) and lifecycle.claim_next(TARGETS, "host:1:x") is None
    # When one worker stops heart-beating and the reconciler sweeps
    stale = lifecycle.timezone.now() - lifecycle.timedelta(seconds=60)
    TaskRecord.objects.filter(pk=held[0].pk).update(heartbeat_at=stale)
    report = Reconciler().sweep()
    # Then its attempt is handed back, and the waiting record can be claimed
    assert report.requeued == 1
    assert lifecycle.claim_next(TARGETS, "host:1:x") is not None


def test_a_key_function_limits_per_key():
    for key in ("a", "a", "b"):
        tasks.one_per_key.enqueue("/dev/null", key, 0)
    claimed = [lifecycle.claim_next(TARGETS, f"host:1:{n}") for n in range(3)]
    assert sorted(r.args[1] for r in claimed if r) == ["a", "b"]


def test_a_queue_limit_applies_to_tasks_without_their_own(settings):
    settings.TASKS_QUEUE_CONCURRENCY = {"default": 1}
    first, second = tasks.add.enqueue(1, 1), tasks.noop.enqueue()
    assert lifecycle.claim_next(TARGETS, "host:1:a").id == first.id
    assert lifecycle.claim_next(TARGETS, "host:1:b") is None
    # A task with its own limit counts against its own, not the queue's
    own = tasks.limited_nap.enqueue("/dev/null", 0)
    assert lifecycle.claim_next(TARGETS, "host:1:b").id == own.id
    assert TaskRecord.objects.get(pk=second.id).status == Status.READY


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"concurrency": 0}, "concurrency must be a whole number >= 1"),
        ({"concurrency": 1.5}, "concurrency must be a whole number >= 1"),
        ({"concurrency_key": str}, "concurrency_key needs concurrency"),
    ],
)
def test_invalid_limits_are_refused_where_the_task_is_declared(options, words):
    with pytest.raises(InvalidTask, match=words):
        dataclasses.replace(tasks.noop, **options)


def test_a_limit_holds_under_four_worker_processes(worker, tmp_path):
    # Given four worker processes (one slot each: a limit of two needs two of
    # them at once), and twelve naps of a task limited to two at once
    path = tmp_path / "naps"
    results = job_system.enqueue_many(
        tasks.limited_nap, [((str(path), 0.4), {}) for _ in range(12)]
    )
    with RunningSampler(tasks.limited_nap.module_path) as sampler:
        worker("default", processes=4)
        for result in results:
            assert wait_finished(result, timeout=60).status == Status.SUCCESSFUL
    # Then never more than two ran at once, and two did
    assert peak(ran(path)) == 2, ran(path)
    assert sampler.highest <= 2
    # And the work was spread over the processes
    workers = {TaskRecord.objects.get(pk=r.id).worker_ids[-1] for r in results}
    assert len(workers) >= 2


def test_a_limit_holds_on_the_celery_lane(celery_worker, reconciler, tmp_path):
    # Given a Celery worker with four pool processes, and eight naps of a
    # task limited to two at once
    path = tmp_path / "naps"
    celery_worker(concurrency=4)
    reconciler()
    with RunningSampler(tasks.g_limited_nap.module_path) as sampler:
        results = job_system.enqueue_many(
            tasks.g_limited_nap, [((str(path), 0.4), {}) for _ in range(8)]
        )
        for result in results:
            assert wait_finished(result, timeout=60).status == Status.SUCCESSFUL
    # Then never more than two ran at once, and two did
    assert peak(ran(path)) == 2, ran(path)
    assert sampler.highest <= 2
