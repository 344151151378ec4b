"""Collector tests share the subprocess fixture and the fake device with other test folders,
and run the store suite on every store: `stores` (an opener) and `store` (an open one) are
parametrised over SQLite and PostgreSQL (a real server, host_tests/pg_support.py)."""
import pytest

from collector_fixtures import collector_proc, fake_device, tls_files  # noqa: F401
from fieldlink_tools.collector.dburl import open_store

STORE_KINDS = ["sqlite", "postgres"]


class Stores:
    """Opens stores on one database of one kind: `open(**kw)` (again: the same data),
    `readonly()`; every store it opened is closed at teardown. `db` is what --db takes;
    `missing()`: the same for a database that does not exist."""

    def __init__(self, kind, db, missing_db):
        self.kind = kind
        self.db = str(db)
        self._missing_db = missing_db
        self._opened = []

    def missing(self):
        return Stores(self.kind, self._missing_db, self._missing_db)

    def open(self, **kw):
        s = open_store(self.db, **kw)
        self._opened.append(s)
        return s

    def readonly(self):
        return self.open(readonly=True)

    def close_all(self):
        for s in self._opened:
            s.close()


@pytest.fixture(params=STORE_KINDS)
def stores(request, tmp_path):
    if request.param == "postgres":
        db = request.getfixturevalue("pg_database")
        missing = request.getfixturevalue("pg_server").dsn("missing")
    else:
        db, missing = tmp_path / "s.db", tmp_path / "missing.db"
    s = Stores(request.param, db, missing)
    yield s
    s.close_all()


@pytest.fixture
def store(stores):
    return stores.open()


@pytest.fixture(params=STORE_KINDS)
def collector_db(request, tmp_path):
    """What `collector_proc(devices, db_path=collector_db)` stores into: a SQLite file or a
    PostgreSQL database."""
    if request.param == "postgres":
        return request.getfixturevalue("pg_database")
    return tmp_path / "collector.db"
