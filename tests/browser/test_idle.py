"""Idle connections survive: redis-py 8's default 5 s socket timeout once killed
an idle runworker and closed idle websockets (channels_redis#422)."""

import pytest
from django.tasks import TaskResultStatus

from tests import tasks
from tests.support import wait_finished

IDLE_SECONDS = 31

IDLE_PROBE = """async (idleMs) => {
    const ws = new WebSocket("ws://" + window.location.host + "/chat/");
    const seen = {closedEarly: null, reply: null};
    ws.onclose = (e) => { if (seen.reply === null) seen.closedEarly = e.code; };
    await new Promise((resolve) => { ws.onopen = resolve; });
    await new Promise((resolve) => setTimeout(resolve, idleMs));
    const reply = new Promise((resolve) => { ws.onmessage = (e) => resolve(e.data); });
    ws.send("after the idle time");
    seen.reply = await Promise.race([
        reply, new Promise((resolve) => setTimeout(() => resolve("no reply"), 5000)),
    ]);
    ws.close();
    return seen;
}"""


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_worker_and_websocket_survive_30s_idle(page, web_server, worker):
    # Given an idle worker and an open websocket
    process = worker("default")
    page.goto(web_server + "/")
    # When both stay idle for longer than 30 s
    seen = page.evaluate(IDLE_PROBE, IDLE_SECONDS * 1000)
    # Then the websocket still echoes, and was never closed
    assert seen == {"closedEarly": None, "reply": "You said: after the idle time"}
    # And the worker is alive and still runs tasks
    assert process.alive(), process.output()
    result = wait_finished(tasks.add.enqueue(2, 2))
    assert result.status == TaskResultStatus.SUCCESSFUL
