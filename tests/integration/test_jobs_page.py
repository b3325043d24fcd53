"""The jobs page through Django's test client (no JavaScript): a user's own
tasks of both lanes, cancel and retry as plain forms."""

import pytest
from django.test import Client
from django.urls import reverse

from tasks import lifecycle
from tasks.context import enqueued_by
from tasks.models import TaskRecord
from tests import tasks

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user("alice")  # no password: fast to make


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user("bob")


def owned_by(user, task=tasks.add, *args):
    with enqueued_by(user):
        return task.enqueue(*(args or (1, 2)))


def test_the_page_lists_only_the_users_tasks_of_both_lanes(client, alice, bob):
    mine = owned_by(alice)
    guaranteed = owned_by(alice, tasks.g_add, 2, 2)
    theirs = owned_by(bob)
    client.force_login(alice)
    response = client.get(reverse("tasks:jobs"))
    assert response.status_code == 200
    html = response.content.decode()
    assert f'id="job-{mine.id}"' in html
    assert f'id="job-{guaranteed.id}"' in html
    assert f'id="job-{theirs.id}"' not in html
    # Each row has its status, attempts and a labelled cancel button
    assert "READY" in html
    assert "0 of 3" in html
    assert '<span class="visually-hidden"> add ' in html


def test_anonymous_visitors_are_sent_to_log_in(client):
    response = client.get(reverse("tasks:jobs"))
    assert response.status_code == 302
    assert response.url.startswith(reverse("login"))


def test_cancel_and_retry_are_forms_that_come_back_to_the_page(client, alice):
    result = owned_by(alice)
    client.force_login(alice)
    # When alice cancels her waiting task
    response = client.post(reverse("tasks:cancel", args=[result.id]), follow=True)
    # Then she is back on the page, told so, and the task failed as cancelled
    assert response.redirect_chain == [(reverse("tasks:jobs"), 302)]
    assert f"Cancelled add ({result.id})." in response.content.decode()
    record = TaskRecord.objects.get(pk=result.id)
    assert record.status == "FAILED"
    assert "TaskCancelled" in record.last_error
    # When she retries it, it waits to run again with a fresh attempt budget
    response = client.post(reverse("tasks:retry", args=[result.id]), follow=True)
    assert f"add ({result.id}) will run again." in response.content.decode()
    record.refresh_from_db()
    assert (record.status, record.max_attempts) == ("READY", 3)
    # And retrying a task that has not failed says why not
    response = client.post(reverse("tasks:retry", args=[result.id]), follow=True)
    assert "Only a failed job can be retried (READY)." in response.content.decode()


def test_cancelling_a_finished_task_says_so(client, alice):
    result = owned_by(alice)
    record = lifecycle.claim(result.id, "host:1:test")
    assert lifecycle.succeed(record, 3)
    client.force_login(alice)
    response = client.post(reverse("tasks:cancel", args=[result.id]), follow=True)
    assert "add had already finished." in response.content.decode()
    assert TaskRecord.objects.get(pk=result.id).status == "SUCCESSFUL"


@pytest.mark.parametrize("action", ["cancel", "retry", "row"])
def test_another_users_task_is_not_found(client, alice, bob, action):
    result = owned_by(bob)
    client.force_login(alice)
    url = reverse(f"tasks:{action}", args=[result.id])
    response = client.get(url) if action == "row" else client.post(url)
    assert response.status_code == 404
    assert TaskRecord.objects.get(pk=result.id).status == "READY"


def test_the_forms_need_the_csrf_token(alice):
    result = owned_by(alice)
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    response = client.post(reverse("tasks:cancel", args=[result.id]))
    assert response.status_code == 403
    assert TaskRecord.objects.get(pk=result.id).status == "READY"


def test_a_row_alone_is_served_for_the_page_to_insert(client, alice):
    result = owned_by(alice)
    client.force_login(alice)
    response = client.get(reverse("tasks:row", args=[result.id]))
    html = response.content.decode()
    assert html.count(f'id="job-{result.id}"') == 1
    assert "<table>" in html  # a bare <tr> would be dropped by an HTML parser
    assert 'name="csrfmiddlewaretoken"' in html
