"""What is PostgreSQL's own about PostgresStore (the shared contract is test_store.py, run on
both): the same tables and columns as SQLite, values keeping their types, work per batch that
does not grow with the device's gaps, a restarted server, and `fieldlink server --db
postgresql://` end to end: passwords kept off the command line and out of the logs, every seq
stored once under concurrent devices and under a PostgreSQL restart."""
import os
import sqlite3
import subprocess
import sys
import threading
import time
from decimal import Decimal

import psycopg
import pytest

from collector_fixtures import FakeDevice, readings
from fieldlink_tools.collector.dburl import open_store, redact
from fieldlink_tools.collector.store import SQLiteStore, StoreError
from fieldlink_tools.collector.store_pg import PostgresStore, decode_value, encode_value


def sqlite_columns(path):
    con = sqlite3.connect(path)
    try:
        tables = [r[0] for r in con.execute(
            "SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        return {t: [r[1] for r in con.execute("PRAGMA table_info(%s)" % t)] for t in tables}
    finally:
        con.close()


def pg_columns(dsn):
    with psycopg.connect(dsn) as con:
        rows = con.execute(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position"
        ).fetchall()
    out = {}
    for t, c in rows:
        out.setdefault(t, []).append(c)
    return out


def test_same_tables_and_columns_as_sqlite_in_the_default_schema(tmp_path, pg_database):
    SQLiteStore(tmp_path / "s.db").close()
    PostgresStore(pg_database).close()
    lite = sqlite_columns(tmp_path / "s.db")
    assert set(lite) == {"devices", "readings", "gaps", "health", "epochs", "ota",
                         "outputs_desired", "outputs_reported", "outputs_audit"}
    assert pg_columns(pg_database) == lite
    with psycopg.connect(pg_database) as con:
        assert con.execute("SELECT current_schema()").fetchone()[0] == "public"


def test_the_same_query_gives_the_same_answer_on_both(tmp_path, pg_database):
    lite, pg = SQLiteStore(tmp_path / "s.db"), PostgresStore(pg_database)
    q = ("SELECT device, COUNT(*), SUM(value), MIN(seq), MAX(seq) FROM readings"
         " WHERE name = 'env.temperature' GROUP BY device ORDER BY device")
    for s in (lite, pg):
        s.add_readings("a", readings([1, 2, 3], value=lambda q: q))
        s.add_readings("b", readings([1, 2], value=lambda q: q * 10))
        s.add_gap("a", 4, 4, "dropped")
    con = sqlite3.connect(tmp_path / "s.db")
    want = con.execute(q).fetchall()
    con.close()
    with psycopg.connect(pg_database) as con:
        got = [tuple(int(x) if not isinstance(x, str) else x for x in row)
               for row in con.execute(q).fetchall()]
    assert got == want == [("a", 3, 6, 1, 3), ("b", 2, 30, 1, 2)]
    lite.close()
    pg.close()


@pytest.mark.parametrize("v", [7, 7.0, 0, 0.0, -3, 21.5, 1e20, 1e-300, 5e-324,
                               1.0000000000000002, 2 ** 62, -2 ** 63, 2 ** 63 - 1, 123.456e10,
                               True, None])
def test_values_round_trip_exactly_with_their_type(v):
    back = decode_value(None if v is None else Decimal(encode_value(v)))
    want = int(v) if isinstance(v, bool) else v
    assert back == want and type(back) is type(want)


def test_values_round_trip_through_the_database(pg_database):
    s = PostgresStore(pg_database)
    vals = [7, 7.0, 1e20, 5e-324, 1.0000000000000002, -2 ** 63, None]
    s.add_readings("d", [dict(r, v=v) for r, v in zip(readings(range(1, 8)), vals)])
    got = [r["v"] for r in s.readings("d")]
    assert got == vals and [type(x) for x in got] == [type(x) for x in vals]
    with pytest.raises(StoreError):
        s.add_readings("d", [dict(readings([8])[0], v=float("inf"))])
    assert s.ack("d") == 7
    s.close()


def gap_index_reads(dsn):
    with psycopg.connect(dsn) as con:
        return con.execute("SELECT COALESCE(SUM(idx_tup_read), 0)::bigint FROM pg_stat_user_indexes"
                           " WHERE relname = 'gaps'").fetchone()[0]


def test_a_batch_reads_no_gaps_of_the_history_nor_those_waiting_above(pg_database):
    """The ack path looks only at gaps starting where the mark just passed: 5000 gaps in a
    device's history and 5000 above its mark cost its batches nothing, whether the ack moves
    or waits behind a missing seq. (A lookup of "gaps covering ack+1" by either index reads one of
    the two piles on every batch.) Counted with the server's statistics: entries of the
    `gaps` indexes read while storing 20 batches."""
    s = PostgresStore(pg_database)
    with psycopg.connect(pg_database) as con:
        for dev in ("moving", "waiting"):
            # seqs below 50000: stored, and gaps 10i..10i+1 (5000 of them); the ack 49999;
            # 5000 gaps more from 50110 up
            con.execute("INSERT INTO gaps SELECT %s, 10 * i, 10 * i + 1, 'dropped', 0, NULL"
                        " FROM generate_series(0, 10000) i WHERE i < 5000 OR i > 5010",
                        (dev,))
            con.execute("INSERT INTO readings (device, seq, name, value, received)"
                        " SELECT %s, q, 'x', 1, 0 FROM generate_series(1, 49999) q"
                        " WHERE q %% 10 > 1", (dev,))
            con.execute("INSERT INTO devices (device, ack) VALUES (%s, 49999)", (dev,))
        con.execute("ANALYZE")

    def reads_during(fn):
        # A session's counters reach the statistics view when it goes idle, at most once a
        # second unless told to: tell the store's session (a query on its own connection).
        s._query("SELECT pg_stat_force_next_flush()")
        before = gap_index_reads(pg_database)
        fn()
        s._query("SELECT pg_stat_force_next_flush()")
        return gap_index_reads(pg_database) - before

    moving = reads_during(lambda: [s.add_readings("moving", readings(range(q, q + 5)))
                                   for q in range(50000, 50100, 5)])
    assert s.ack("moving") == 50099
    waiting = reads_during(lambda: [s.add_readings("waiting", readings(range(q, q + 5)))
                                    for q in range(50001, 50100, 5)])    # 50000 missing
    assert s.ack("waiting") == 49999
    assert moving < 100 and waiting < 100, (moving, waiting)   # a pile is 20 * 5000
    s.close()


def test_a_restarted_server_fails_one_call_and_the_next_reconnects(pg_server, pg_database):
    s = PostgresStore(pg_database)
    assert s.add_readings("d", readings([1, 2]))[0] == 2
    pg_server.restart(mode="immediate")        # a crash: recovery from the WAL
    try:
        assert s.add_readings("d", readings([3]))[0] == 3
    except StoreError:
        assert s.add_readings("d", readings([3]))[0] == 3
    assert [r["q"] for r in s.readings("d")] == [1, 2, 3]
    s.close()


def test_a_connection_lost_mid_group_fails_the_group_and_nothing_of_it_stays(pg_database):
    s = PostgresStore(pg_database)
    s.add_readings("d", readings([1]))
    with psycopg.connect(pg_database, autocommit=True) as con:
        con.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = 'fieldlink-collector'")
    with pytest.raises(StoreError):
        s.apply([("add_readings", ("d", readings([2]))), ("add_gap", ("d", 3, 3, "dropped"))])
    assert s.ack("d") == 1 and [r["q"] for r in s.readings("d")] == [1]
    s.close()


def _devices_file(tmp_path):
    f = tmp_path / "devices.json"
    f.write_text('{"d": "a-device-token-of-24ch"}')
    return str(f)


def test_a_password_in_the_url_is_refused_and_never_printed(tmp_path):
    for db in ("postgresql://fieldlink:hunter2secret@127.0.0.1:1/x",
               "postgres://fieldlink@127.0.0.1:1/x?sslmode=disable&password=hunter2secret"):
        out = subprocess.run([sys.executable, "-m", "fieldlink_tools.cli", "server",
                              "--port", "0", "--devices", _devices_file(tmp_path), "--db", db],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 2, out.stderr
        assert "--db-password-file" in out.stderr and "PGPASSWORD" in out.stderr
        assert "hunter2secret" not in out.stderr + out.stdout
        assert "***" in out.stderr
    assert redact("postgresql://u:p%40ss@h/d?sslpassword=k&x=1") == (
        "postgresql://u:***@h/d?sslpassword=***&x=1")


def test_an_unreachable_database_is_one_line(tmp_path, refused_port):
    out = subprocess.run([sys.executable, "-m", "fieldlink_tools.cli", "server", "--port", "0",
                          "--devices", _devices_file(tmp_path),
                          "--db", "postgresql://fieldlink@127.0.0.1:%d/x" % refused_port],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.startswith("fieldlink server: --db postgresql://fieldlink@127.0.0.1:")
    assert "Traceback" not in out.stderr


class StreamingDevice:
    """A device that streams `total` seqs in batches of `per` over the real protocol and, like
    the firmware, reconnects after any failure and resends everything not acked yet. Records
    every ack it was given: each acked seq must be in the store at the end."""

    def __init__(self, url, dev, token, total, per=5, deadline=90):
        self.url, self.dev, self.token = url, dev, token
        self.total, self.per = total, per
        self.deadline = time.monotonic() + deadline
        self.acked = 0            # the highest ack received
        self.reconnects = 0
        self.error = None

    def run(self):
        try:
            while self.acked < self.total:
                if time.monotonic() > self.deadline:
                    raise TimeoutError("%s: acked %d of %d" % (self.dev, self.acked,
                                                              self.total))
                try:
                    self._connection()
                except Exception:           # refused, closed 1011, reset: back off, retry
                    self.reconnects += 1
                    time.sleep(0.1)
        except BaseException as e:
            self.error = e

    def _connection(self):
        with FakeDevice(self.url, self.dev, self.token, timeout=10) as d:
            held = self.total - self.acked
            ack = d.hello(next=self.acked + 1, first=self.acked + 1, held=held)
            assert ack >= self.acked, (ack, self.acked)   # an ack never goes back
            self.acked = ack
            while self.acked < self.total:
                a = self.acked + 1
                ack = d.batch(range(a, min(a + self.per, self.total + 1)))
                assert ack >= self.acked, (ack, self.acked)
                self.acked = ack


def audit(store, dev, total):
    seqs = [r["q"] for r in store.readings(dev)]
    assert seqs == list(range(1, total + 1)), "%s: %d stored, %d distinct" % (
        dev, len(seqs), len(set(seqs)))
    assert store.gaps(dev) == [] and store.ack(dev) == total


def test_collector_on_postgresql_over_tcp_with_a_password_file(collector_proc, pg_server,
                                                               pg_database, tmp_path):
    """`fieldlink server --db postgresql://USER@127.0.0.1:PORT/DB --db-password-file F`, with
    four devices streaming at once: every seq stored once; the password is in no argument
    and no log line."""
    dbname = pg_database.split("?")[0].rsplit("/", 1)[1]
    devs = {"dev-%d" % i: "tok-%d" % i for i in range(4)}
    c = collector_proc(devs, db_path=pg_server.url(dbname), env={
        k: v for k, v in os.environ.items() if not k.startswith("PG")},
        extra_args=["--db-password-file", pg_server.password_file, "-v"])
    with open("/proc/%d/cmdline" % c.proc.pid, "rb") as f:
        assert pg_server.password.encode() not in f.read()
    devices = [StreamingDevice(c.url, d, t, total=200, per=7) for d, t in devs.items()]
    threads = [threading.Thread(target=d.run) for d in devices]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for d in devices:
        assert d.error is None, d.error
    st = open_store(pg_database, readonly=True)     # c.store() would need the password
    for d in devices:
        audit(st, d.dev, 200)
    st.close()
    c.stop()
    assert pg_server.password not in c.log()
    assert "store: postgresql://fieldlink@127.0.0.1:%d/%s" % (pg_server.port, dbname) in c.log()


def test_postgresql_restarted_under_load_loses_nothing_acked(collector_proc, pg_server,
                                                             pg_database):
    """Three devices streaming while PostgreSQL crashes (immediate stop: no checkpoint) and
    comes back twice: acks pause (the devices are closed with 1011 and reconnect), every seq
    acked before the crash is still there, and at the end every seq is stored once."""
    devs = {"dev-%d" % i: "tok-%d" % i for i in range(3)}
    c = collector_proc(devs, db_path=pg_database)
    devices = [StreamingDevice(c.url, d, t, total=400, per=4, deadline=150)
               for d, t in devs.items()]
    threads = [threading.Thread(target=d.run) for d in devices]
    for t in threads:
        t.start()
    try:
        for target in (60, 200):
            deadline = time.monotonic() + 60
            while min(d.acked for d in devices) < target:   # under load: all streaming
                assert time.monotonic() < deadline and all(t.is_alive() for t in threads), [
                    (d.acked, d.error) for d in devices]
                time.sleep(0.02)
            tries = sum(d.reconnects for d in devices)
            pg_server.stop(mode="immediate")
            acked = {d.dev: d.acked for d in devices}    # nothing acked from now on is stored
            deadline = time.monotonic() + 30
            while sum(d.reconnects for d in devices) < tries + 3:   # the devices noticed
                assert time.monotonic() < deadline
                time.sleep(0.02)
            pg_server.start()
            st = c.store()
            for dev, n in acked.items():
                got = [r["q"] for r in st.readings(dev, limit=n)]
                assert got == list(range(1, n + 1)), dev        # nothing acked was lost
            st.close()
    finally:
        for t in threads:
            t.join(150)
    for d in devices:
        assert d.error is None, d.error
    assert sum(d.reconnects for d in devices) >= 1
    st = c.store()
    for d in devices:
        audit(st, d.dev, 400)
    st.close()


def test_a_role_with_only_data_privileges_runs_once_the_tables_exist(pg_server, pg_database):
    PostgresStore(pg_database).close()                         # the owner made the tables
    dbname = pg_database.split("?")[0].rsplit("/", 1)[1]
    with psycopg.connect(pg_database, autocommit=True) as con:
        con.execute("DROP ROLE IF EXISTS collector_%s" % dbname)
        con.execute("CREATE ROLE collector_%s LOGIN" % dbname)
        con.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        con.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON devices, readings, gaps, health,"
                    " epochs TO collector_%s" % dbname)
    dsn = pg_database.replace("fieldlink@", "collector_%s@" % dbname)
    s = PostgresStore(dsn)
    assert s.add_readings("d", readings([1, 2]))[0] == 2
    s.record_health("d", {"heap_free": 1})
    s.close()
    with psycopg.connect(pg_database, autocommit=True) as con:
        con.execute("DROP OWNED BY collector_%s" % dbname)
        con.execute("DROP ROLE collector_%s" % dbname)


def test_acks_wait_for_the_wal_flush_whatever_the_database_default(pg_database):
    dbname = pg_database.split("?")[0].rsplit("/", 1)[1]
    with psycopg.connect(pg_database, autocommit=True) as con:
        con.execute("ALTER DATABASE %s SET synchronous_commit = off" % dbname)
    full, normal = PostgresStore(pg_database), PostgresStore(pg_database, synchronous="NORMAL")
    # the store's own session setting (a query on its connection)
    assert full._query("SHOW synchronous_commit") == [("on",)]
    assert normal._query("SHOW synchronous_commit") == [("off",)]
    full.close()
    normal.close()


def test_a_group_chosen_as_a_deadlock_victim_runs_again(pg_database):
    """Two writers locking the same devices in opposite orders (two collectors, each holding a
    device the other's group also touches): PostgreSQL aborts one transaction; that group is
    run again, not failed."""
    s = PostgresStore(pg_database)
    s.add_readings("d1", readings([1]))
    s.add_readings("d2", readings([1]))
    other = psycopg.connect(pg_database)              # the other writer, in a transaction
    other.execute("SET deadlock_timeout = '60s'")     # so the victim is the store's group
    other.execute("SELECT 1 FROM devices WHERE device = 'd2' FOR UPDATE")
    out = []
    t = threading.Thread(target=lambda: out.append(s.apply([
        ("add_readings", ("d1", readings([2]))), ("add_readings", ("d2", readings([2])))])))
    t.start()
    with psycopg.connect(pg_database, autocommit=True) as watch:
        deadline = time.monotonic() + 30
        while not watch.execute("SELECT 1 FROM pg_stat_activity WHERE application_name ="
                                " 'fieldlink-collector' AND wait_event_type = 'Lock'"
                                ).fetchone():
            assert time.monotonic() < deadline, "the group never waited for d2"
            time.sleep(0.02)
    # now the store's group holds d1 and waits for d2: take d1 too, closing the cycle
    other.execute("SELECT 1 FROM devices WHERE device = 'd1' FOR UPDATE")
    other.execute("UPDATE devices SET hello = '{}' WHERE device IN ('d1', 'd2')")
    other.commit()
    other.close()
    t.join(60)
    assert out and [r[0] for r in out[0]] == [2, 2]
    assert s.ack("d1") == s.ack("d2") == 2
    s.close()


def test_the_collector_in_process_on_postgresql_serves_what_it_stored(pg_database):
    import asyncio
    import json
    import urllib.request
    from fieldlink_tools.collector import Collector, Devices

    async def main():
        store = PostgresStore(pg_database)
        viewer = "a-viewer-token-of-24-ch"
        c = Collector(store, Devices({"dev-1": "tok-1"}), port=0, viewer_token=viewer)
        await c.start()
        try:
            def device():
                with FakeDevice(c.url, "dev-1", "tok-1") as d:
                    assert d.hello(epoch="ab") == 0
                    assert d.batch([1, 2, 3]) == 3
                    assert d.gap(4, 5) == 5
                req = urllib.request.Request(c.http_url + "api/devices",
                                             headers={"Authorization": "Bearer " + viewer})
                with urllib.request.urlopen(req, timeout=10) as r:
                    return json.loads(r.read())
            return await asyncio.wait_for(asyncio.to_thread(device), 60)
        finally:
            await c.stop()
            store.close()
    got = asyncio.run(main())
    (dev,) = got["devices"] if isinstance(got, dict) else got
    assert dev["ack"] == 5 and dev["readings"] == 3 and dev["dropped_gaps"] == 2
    assert dev["epoch"] == "ab" and [r["q"] for r in dev["latest"]][:3] == [3, 2, 1]


def test_bench_store_prints_its_numbers(pg_database, capsys):
    from fieldlink_tools import bench_store
    assert bench_store.main(["--devices", "3", "--batches", "30", "--group", "10",
                             "--db", pg_database]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    keys = dict(kv.split("=") for kv in last.split())
    assert {"sqlite_single_batches_per_s", "postgres_single_batches_per_s",
            "postgres_group_batches_per_s"} <= set(keys)
    assert all(float(v) > 0 for v in keys.values())
    s = PostgresStore(pg_database, readonly=True)
    assert s.ack("dev-0") == 10 and s.ack("g-dev-0") == 10    # everything stored and acked
    s.close()


def test_ota_steps_are_kept_in_order_on_both(tmp_path, pg_database):
    lite, pg = SQLiteStore(tmp_path / "s.db"), PostgresStore(pg_database)
    for s in (lite, pg):
        s.record_ota("a", "of1", "2.0", "offered")
        s.record_ota("a", "of1", "2.0", "refused", "bad signature")
        s.record_ota("b", "of1", "2.0", "offered")
        got = [(r["offer"], r["version"], r["state"], r["reason"]) for r in s.ota_history("a")]
        assert got == [("of1", "2.0", "offered", None), ("of1", "2.0", "refused",
                                                          "bad signature")], s
        s.close()
