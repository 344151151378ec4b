"""PostgreSQL for the tests: one throwaway server per pytest process (each xdist worker starts
its own, so workers share nothing and need no coordination; initdb + start take ~1 s) and a
fresh database per test. Without PostgreSQL installed the tests that need it skip, with the
reason; under CI=true they fail instead (CI must run them: `make test` installs it).

    def test_x(pg_server, pg_database):
        PostgresStore(pg_database)     # a libpq URL of an empty database of its own
        pg_server.restart()            # TempPostgres: the whole server
"""
import itertools
import os

import pytest

from fieldlink_tools.temp_postgres import PostgresUnavailable, TempPostgres


def _unavailable(why):
    msg = "PostgreSQL unavailable: %s" % why
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(msg + " (CI=true: these tests must run here)", pytrace=False)
    pytest.skip(msg)


@pytest.fixture(scope="session")
def pg_server():
    """A running TempPostgres for this pytest process; stopped and removed at the end."""
    try:
        pg = TempPostgres().start()
    except (PostgresUnavailable, KeyError, OSError) as e:   # KeyError: no user `nobody`
        _unavailable(str(e).strip().splitlines()[0] if str(e).strip() else repr(e))
    yield pg
    pg.remove()


_db_numbers = itertools.count(1)


@pytest.fixture
def pg_database(pg_server):
    """A libpq URL (unix socket, no password) of a new empty database, dropped afterwards."""
    name = pg_server.create_database("t%d" % next(_db_numbers))
    yield pg_server.dsn(name)
    try:
        pg_server.drop_database(name)
    except Exception:
        pass     # a test that stopped the server: the whole cluster goes at the end anyway
