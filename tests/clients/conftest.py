"""The vendors' own client libraries against a live server (issue 14; API.md §1: a client written
against any of our vendors works after changing only its base URL and key).

How a module runs (`world_and_answers`, once per module):
1. A live server: pytest-django's `LiveServer`, the same one its `live_server` fixture starts
   (Django's threaded WSGI server on a free port of 127.0.0.1, over the test database; SQLite and
   PostgreSQL alike), but owned by the module.
2. The world (tests/clients/world.py) is seeded with committed rows, its grants and usage sent
   through the live server's own endpoints; then the module's `collect_answers(world)` runs its
   client once, in the client's own cached venv (clientenv.py), calling every method the module
   checks, and keeps what came back.
3. The tests, one per client method, compare those answers with numbers recomputed from the
   events sent. They touch no database themselves (world.LIVE_DATABASE).
4. At the end of the module the database is emptied the way a transactional test empties it
   (flush, then the system policies put back, as the suite's conftest does), also when seeding or
   a client failed, and the server stops.

Why per module and not per test: a client's interpreter and imports cost a second or two and a
flush of PostgreSQL about as much; per test, the twenty tests here would pay both twenty times
(measured: 58 s against 18 s for tests/clients on PostgreSQL). As transactional tests they run
after every other database test, so the committed world is never seen by another test, and what
they leave is what a transactional test leaves.
"""

from __future__ import annotations

import pytest

from tests.clients import world as client_world


def _reset_database() -> None:
    from django.core.cache import cache
    from django.core.management import call_command

    call_command("flush", verbosity=0, interactive=False)
    _put_back_system_policies()
    cache.clear()


def _put_back_system_policies() -> None:
    from portal.models import Policy
    from portal.ram.system_policies import sync_system_policies

    sync_system_policies(Policy)


@pytest.fixture(scope="module")
def world_and_answers(request, django_db_setup, django_db_blocker):
    from django.core.cache import cache
    from django.db import connection
    from django.db.backends.base.creation import TEST_DATABASE_PREFIX
    from pytest_django.live_server_helper import LiveServer

    # Flushing is only ever for the test database: without a database marker on the module's
    # tests, pytest-django would create none and this would be the developer's own.
    name, test_name = connection.settings_dict["NAME"], connection.settings_dict["TEST"]["NAME"]
    if name != test_name and not (test_name is None and str(name).startswith(TEST_DATABASE_PREFIX)):
        pytest.fail(f"tests/clients would write to {connection.settings_dict['NAME']}, not the test database: "
                    "mark the module's tests with tests.clients.world.LIVE_DATABASE", pytrace=False)
    collect = request.module.collect_answers
    server = LiveServer("127.0.0.1")
    try:
        with django_db_blocker.unblock():
            # A transactional test before this module flushed the system policies away with
            # everything else (the suite's conftest puts them back per test, too late for here).
            _put_back_system_policies()
            cache.clear()
            world = client_world.build(server.url)
            answers = collect(world)
        yield world, answers
    finally:
        with django_db_blocker.unblock():
            _reset_database()
        server.stop()


@pytest.fixture
def world(world_and_answers):
    return world_and_answers[0]


@pytest.fixture
def answers(world_and_answers):
    return world_and_answers[1]
