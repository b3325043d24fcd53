"""The seed's console snippet, pasted into a real browser on the real server."""

import pytest

# The README and the home page give this snippet; it runs verbatim.
SNIPPET = """socket = new WebSocket("ws://" + window.location.host + "/chat/");
socket.onmessage = function(e) {
    alert(e.data);
}
socket.onopen = function() {
    socket.send("hello world");
}"""

PROBE = """async (path) => {
    const ws = new WebSocket("ws://" + window.location.host + path);
    const seen = {opened: false, messages: [], code: null};
    ws.onopen = () => { seen.opened = true; ws.send("hello world"); };
    ws.onmessage = (e) => seen.messages.push(e.data);
    await new Promise((resolve) => {
        ws.onclose = (e) => { seen.code = e.code; resolve(); };
    });
    return seen;
}"""


def test_home_page_shows_the_snippet(page, web_server):
    page.goto(web_server + "/")
    assert page.locator("h1").inner_text() == "Background jobs on Django Channels"
    assert page.locator("#echo-snippet").inner_text() == SNIPPET


def test_pasted_snippet_alerts_the_echo(page, web_server):
    # Given the welcome page
    page.goto(web_server + "/")
    # When the snippet is pasted as a console would run it
    with page.expect_event("dialog", timeout=15_000) as dialog_info:
        page.add_script_tag(content=SNIPPET)
    dialog = dialog_info.value
    # Then the alert carries the server's echo
    assert dialog.type == "alert"
    assert dialog.message == "You said: hello world"
    dialog.accept()


@pytest.mark.parametrize("path", ["/private", "/", "/user/1234"])
def test_other_paths_get_no_echo(page, web_server, path):
    page.goto(web_server + "/")
    seen = page.evaluate(PROBE, path)
    assert seen["opened"] is False
    assert seen["messages"] == []


def test_frame_over_daphnes_limit_closes_the_socket(page, web_server):
    # Daphne runs with a 64 KiB websocket message limit (Procfile)
    page.goto(web_server + "/")
    seen = page.evaluate(
        """async () => {
            const ws = new WebSocket("ws://" + window.location.host + "/chat/");
            await new Promise((resolve) => { ws.onopen = resolve; });
            const closed = new Promise((resolve) => {
                ws.onclose = (e) => resolve(e.code);
            });
            ws.send("x".repeat(70 * 1024));
            return await closed;
        }"""
    )
    # autobahn drops the connection (the browser reports 1006) or closes with
    # 1009 "message too big"; either way the message never reaches the app
    assert seen in (1006, 1009)
    # and the server goes on serving
    with page.expect_event("dialog", timeout=15_000) as dialog_info:
        page.add_script_tag(content=SNIPPET)
    assert dialog_info.value.message == "You said: hello world"
    dialog_info.value.accept()
