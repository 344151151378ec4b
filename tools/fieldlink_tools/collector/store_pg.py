"""`PostgresStore`: the collector's store on PostgreSQL (psycopg 3), for a fleet that outgrows
one SQLite file or several collectors sharing one database. Same `Store` contract as
SQLiteStore (store.py), same tables and columns (docs/collector.md), in the database's default
schema, so the same queries work on both.

Semantics come from keys and transactions, as on SQLite: a reading is stored once by
PRIMARY KEY (device, seq) + ON CONFLICT DO NOTHING; every write to a device first locks its
`devices` row (the upsert that creates it), so writers of one device, in this process or in
another collector, run one after the other, and READ COMMITTED then sees everything the one
before committed; an ack is returned only after COMMIT, which waits for the WAL flush
(synchronous_commit on).
"""
import json
import math
import random
import threading
import time
from decimal import Decimal

import psycopg

from .store import (DEFAULT_KEEP_HEALTH, HEALTH_SERIES, Store, StoreError, bucket_plan,
                    bucket_rows, epoch_dicts, ota_dicts, reading_dict, record_reported_in,
                    set_desired_in)

SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    device       TEXT PRIMARY KEY,
    ack          BIGINT NOT NULL DEFAULT 0,
    readings     BIGINT NOT NULL DEFAULT 0,
    last_seq     BIGINT NOT NULL DEFAULT 0,
    first_seen   DOUBLE PRECISION,
    last_seen    DOUBLE PRECISION,
    hello        TEXT,
    health       TEXT,
    health_at    DOUBLE PRECISION,
    epoch        TEXT NOT NULL DEFAULT '',
    epoch_offset BIGINT NOT NULL DEFAULT 0,
    dropped      BIGINT NOT NULL DEFAULT 0     -- seqs in gaps `dropped`, kept with each gap
);
CREATE TABLE IF NOT EXISTS readings (
    device   TEXT NOT NULL,
    seq      BIGINT NOT NULL,
    boot     BIGINT,
    ts       DOUBLE PRECISION,
    up       BIGINT,
    name     TEXT NOT NULL,
    value    NUMERIC,            -- exact; the scale tells a float (7.0) from an integer (7)
    unit     TEXT,
    err      TEXT,
    received DOUBLE PRECISION NOT NULL,
    epoch    TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (device, seq)
);
CREATE TABLE IF NOT EXISTS gaps (
    device   TEXT NOT NULL,
    seq_from BIGINT NOT NULL,
    seq_to   BIGINT NOT NULL,
    why      TEXT NOT NULL,
    received DOUBLE PRECISION NOT NULL,
    reason   TEXT,
    PRIMARY KEY (device, seq_from, seq_to, why)
);
CREATE INDEX IF NOT EXISTS gaps_by_to ON gaps (device, seq_to);
CREATE TABLE IF NOT EXISTS health (
    device   TEXT NOT NULL,
    received DOUBLE PRECISION NOT NULL,
    body     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS health_by_device ON health (device, received);
CREATE TABLE IF NOT EXISTS epochs (
    device     TEXT NOT NULL,
    epoch      TEXT NOT NULL,
    seq_offset BIGINT NOT NULL,
    started_at DOUBLE PRECISION NOT NULL,
    previous   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS ota (
    device   TEXT NOT NULL,
    offer    TEXT NOT NULL,
    version  TEXT NOT NULL,
    state    TEXT NOT NULL,
    reason   TEXT,
    at       DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS ota_by_device ON ota (device, at);
CREATE INDEX IF NOT EXISTS epochs_by_device ON epochs (device, epoch, seq_offset);
CREATE TABLE IF NOT EXISTS outputs_desired (
    device  TEXT NOT NULL,
    output  TEXT NOT NULL,
    ver     BIGINT NOT NULL,
    body    TEXT NOT NULL,
    set_by  TEXT NOT NULL,
    set_at  DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (device, output)
);
CREATE TABLE IF NOT EXISTS outputs_reported (
    device  TEXT NOT NULL,
    output  TEXT NOT NULL,
    ver     BIGINT NOT NULL,
    v       NUMERIC,             -- exact, the scale tells a float from an integer (readings)
    why     TEXT NOT NULL,
    err     TEXT,
    at      DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (device, output)
);
CREATE TABLE IF NOT EXISTS outputs_audit (
    device  TEXT NOT NULL,
    output  TEXT NOT NULL,
    at      DOUBLE PRECISION NOT NULL,
    who     TEXT NOT NULL,
    ver     BIGINT NOT NULL,
    "from"  TEXT,
    "to"    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS outputs_audit_by_device ON outputs_audit (device, at);
"""

# Two collectors starting at once would race on CREATE TABLE IF NOT EXISTS (it is not atomic
# against a concurrent creator): the schema is made under this transaction-scoped lock.
_SCHEMA_LOCK = 0x6669656c64   # "field"
_OUTPUT_LOCK = 0x6f7574      # "out": the first key of an output's advisory lock

_READING_COLS = (
    "r.seq, r.boot, r.ts, r.up, r.name, r.value, r.unit, r.err, r.received, r.epoch,"
    " r.seq - COALESCE((SELECT MAX(e.seq_offset) FROM epochs e WHERE e.device=r.device"
    " AND e.epoch=r.epoch AND e.seq_offset<r.seq), 0)")

# How many seqs one query looks at when following a run of stored readings (bounds the work
# of one batch when many readings wait above a hole).
_RUN_CHUNK = 1000

# One step of the ack: the run of stored readings from ack+1 within (ack, hi] (its rows are
# those with seq - rank = ack; counted only when ack+1 is stored, so readings waiting above a
# hole are not walked on every batch), and the furthest end of the gaps starting in (looked, the run's
# end + 1] (the only ones that can reach past it). OFFSET 0 keeps the planner from turning
# that MAX into "the top of gaps_by_to, filtered", which walks every gap above the mark.
_RUN_THEN_GAP = (
    "SELECT r.n, (SELECT MAX(g.seq_to) FROM (SELECT seq_to FROM gaps WHERE device = %(d)s"
    " AND seq_from > %(looked)s AND seq_from <= %(ack)s + 1 + r.n OFFSET 0) g)"
    " FROM (SELECT CASE WHEN EXISTS (SELECT 1 FROM readings WHERE device = %(d)s"
    " AND seq = %(ack)s + 1) THEN (SELECT COUNT(*) FROM (SELECT seq - ROW_NUMBER() OVER"
    " (ORDER BY seq) AS k FROM readings WHERE device = %(d)s AND seq > %(ack)s"
    " AND seq <= %(hi)s) t WHERE k = %(ack)s) ELSE 0 END AS n) r")

# How often a group is tried when a deadlock or a serialisation failure rolled it back.
_RETRIES = 3
_RETRY_STATES = ("40P01", "40001")

# The methods `apply` runs (the writes); each returns what its single method returns.
WRITE_OPS = ("add_readings", "add_gap", "enter_epoch", "record_hello", "record_health",
             "record_ota", "set_desired", "record_reported")

# Errors caused by one operation's data (a NOT NULL name, a number out of range): that
# operation fails alone. Everything else psycopg raises (connection lost, server shutting
# down, disk full, timeouts) fails the whole group and drops the connection.
_DATA_ERRORS = (psycopg.IntegrityError, psycopg.DataError)


def encode_value(v):
    """A reading's value as NUMERIC text that keeps its type: a float always has a fractional
    part (7.0, 100000000000000000000.0), an integer none; both exact (repr round-trips)."""
    if v is None:
        return None
    if isinstance(v, int):        # bool too: stored as 1/0, as SQLite does
        return str(int(v))
    if not isinstance(v, float):
        raise StoreError("reading value must be a number or null, not %s" % type(v).__name__)
    if not math.isfinite(v):
        raise StoreError("reading value %r is not a finite number" % v)
    s = repr(v)
    if "e" in s or "E" in s:
        s = format(Decimal(s), "f")
    return s if "." in s else s + ".0"


def decode_value(d):
    if d is None:
        return None
    return float(d) if d.as_tuple().exponent < 0 else int(d)


def _row(row):
    row = list(row)
    row[5] = decode_value(row[5])
    return reading_dict(row)


class PostgresStore(Store):
    """One connection, used under a lock (the server calls from one worker thread, tests
    sometimes from another). A connection that fails is dropped; the next call connects
    again, so a PostgreSQL restart costs the calls made while it is down (StoreError: the
    server acks nothing then), and nothing acked."""

    def __init__(self, dsn, synchronous="FULL", keep_health=DEFAULT_KEEP_HEALTH,
                 password=None, readonly=False, connect_timeout=10, statement_timeout=30):
        if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError("synchronous must be FULL, NORMAL or EXTRA")
        self._dsn = dsn
        self._password = password          # kept out of the DSN (which may be logged)
        # NORMAL: commits are not waited for (synchronous_commit off): a server crash may
        # lose the last ~0.2 s of acked data, never corrupt it. For benchmarks, as on SQLite.
        self._sync_commit = "off" if synchronous.upper() == "NORMAL" else "on"
        self.keep_health = int(keep_health)
        self.readonly = readonly
        self._connect_timeout = connect_timeout
        self._statement_timeout_ms = int(statement_timeout * 1000)
        self._lock = threading.Lock()
        self._conn = None
        self._closed = False
        with self._lock:
            self._connection()     # fail now (StoreError) if the database cannot be reached

    # -- the connection --------------------------------------------------------------------

    def _connection(self):
        if self._closed:
            raise StoreError("store is closed")
        if self._conn is not None and not self._conn.closed:
            return self._conn
        self._conn = None
        kw = {"autocommit": True, "connect_timeout": self._connect_timeout,
              "application_name": "fieldlink-collector",
              # a peer that vanished without a FIN (cable, crashed host) is noticed
              "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
              "keepalives_count": 3}
        if self._password is not None:
            kw["password"] = self._password
        try:
            conn = psycopg.connect(self._dsn, **kw)
            try:
                # Bounded waits: a stuck server or a row lock held elsewhere turns into a
                # StoreError (the device retries later) instead of a stuck store thread.
                conn.execute("SET statement_timeout = %d" % self._statement_timeout_ms)
                conn.execute("SET lock_timeout = %d" % self._statement_timeout_ms)
                conn.execute("SET synchronous_commit = " + self._sync_commit)
                if self.readonly:
                    conn.execute("SET default_transaction_read_only = on")
                elif not self._has_tables(conn):
                    # Only then: CREATE ... IF NOT EXISTS still needs the CREATE privilege,
                    # which a collector's role may lack once the tables exist.
                    with conn.transaction():
                        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                        conn.execute(SCHEMA)
            except BaseException:
                conn.close()
                raise
        except psycopg.Error as e:
            raise StoreError("cannot use the database: %s" % _first_line(e)) from e
        self._conn = conn
        return conn

    @staticmethod
    def _has_tables(conn):
        row = conn.execute("SELECT to_regclass('devices'), to_regclass('readings'),"
                           " to_regclass('gaps'), to_regclass('health'),"
                           " to_regclass('epochs'), to_regclass('ota'),"
                           " to_regclass('outputs_desired'),"
                           " to_regclass('outputs_reported'), to_regclass('outputs_audit')"
                           ).fetchone()
        return all(x is not None for x in row)

    def _drop_connection(self):
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = None

    # -- writing: groups of operations, one transaction ----------------------------------

    def apply(self, ops):
        """Run ops, a list of (method_name, args) with method_name in WRITE_OPS, in ONE
        transaction, in order; one durable commit for all. An op that fails on its data is
        rolled back alone and its slot holds the exception; the others commit. A failure of
        the database itself (connection, commit) raises StoreError for the whole group."""
        ops = [(name, tuple(args)) for name, args in ops]
        for name, _ in ops:
            if name not in WRITE_OPS:
                raise ValueError("not a store write: %r" % (name,))
        if not ops:
            return []
        if self.readonly:
            raise StoreError("read-only store")
        with self._lock:
            for attempt in range(1, _RETRIES + 1):
                try:
                    return self._apply(ops)
                except psycopg.Error as e:
                    # A deadlock with another collector writing the same devices in another
                    # order (or a serialisation failure): the server rolled the whole group
                    # back, so running it again is safe; a short random wait first lets the
                    # other transaction finish instead of meeting it again.
                    if e.sqlstate in _RETRY_STATES and attempt < _RETRIES:
                        time.sleep(random.uniform(0.01, 0.05) * attempt)
                        continue
                    self._drop_connection()
                    raise StoreError("database failed: %s" % _first_line(e)) from e

    def _apply(self, ops):
        conn = self._connection()
        # Savepoints only when an op failed: a savepoint that writes is a subtransaction, and
        # past 64 of them in one transaction every session's snapshots get slower (the subxid
        # cache overflows). So the group runs plainly; if an op fails on its data, it runs
        # again with one savepoint per op, which gives the same result as if it always had.
        try:
            with conn.transaction():
                return [self._run(conn, name, args) for name, args in ops]
        except _OpFailed as e:
            if len(ops) == 1:
                return [e.error]
        results = []
        with conn.transaction():
            for name, args in ops:
                try:
                    with conn.transaction():     # SAVEPOINT ... RELEASE / ROLLBACK TO
                        results.append(self._run(conn, name, args))
                except _OpFailed as e:
                    results.append(e.error)
        return results

    def _run(self, conn, name, args):
        try:
            return getattr(self, "_" + name)(conn.cursor(), *args)
        except _DATA_ERRORS as e:
            raise _OpFailed(StoreError("%s: %s" % (name, _first_line(e)))) from e
        except psycopg.Error:
            raise
        except Exception as e:      # the op's own data (a missing key, a bad value)
            raise _OpFailed(e) from e

    def _one(self, name, *args):
        out = self.apply([(name, args)])[0]
        if isinstance(out, BaseException):
            raise out
        return out

    def add_readings(self, device, readings, boot=None, epoch="", rejected=()):
        return self._one("add_readings", device, readings, boot, epoch, rejected)

    def add_gap(self, device, seq_from, seq_to, why, reason=None):
        return self._one("add_gap", device, seq_from, seq_to, why, reason)

    def enter_epoch(self, device, epoch, next_seq):
        return self._one("enter_epoch", device, epoch, next_seq)

    def record_hello(self, device, hello):
        return self._one("record_hello", device, hello)

    def record_health(self, device, health):
        return self._one("record_health", device, health)

    def record_ota(self, device, offer, version, state, reason=None):
        return self._one("record_ota", device, offer, version, state, reason)

    @staticmethod
    def _record_ota(cur, device, offer, version, state, reason):
        cur.execute("INSERT INTO ota (device, offer, version, state, reason, at)"
                    " VALUES (%s, %s, %s, %s, %s, %s)",
                    (device, offer, version, state, reason, time.time()))

    def ota_history(self, device, limit=100):
        rows = self._query("SELECT offer, version, state, reason, at FROM ota WHERE device = %s"
                           " ORDER BY at DESC LIMIT %s", (device, int(limit)))
        return ota_dicts(rows)

    def set_desired(self, device, output, change, who):
        return self._one("set_desired", device, output, dict(change), who)

    def record_reported(self, device, out):
        return self._one("record_reported", device, out)

    # -- the operations (inside the group's transaction) ---------------------------------

    @staticmethod
    def _lock_device(cur, device, now):
        """Create or touch the device's row, which locks it until the transaction ends;
        returns (ack, epoch, epoch_offset, last_seq) as committed by whoever wrote before."""
        cur.execute("INSERT INTO devices (device, first_seen, last_seen) VALUES (%s, %s, %s)"
                    " ON CONFLICT (device) DO UPDATE SET last_seen = EXCLUDED.last_seen"
                    " RETURNING ack, epoch, epoch_offset, last_seq", (device, now, now))
        return cur.fetchone()

    @staticmethod
    def _advance(cur, device, ack, covered=()):
        """The new contiguous high-water mark from `ack`, the device's stored mark.

        Bounded by the new data, not the history: the stored mark is a fixpoint, so every gap
        starting at or below ack+1 ends at or below it. The only gaps that can move it are
        those this transaction made (`covered`: seq ranges now inside gaps) and older ones
        starting above the old mark, which are looked up by the primary key (device,
        seq_from, ...) only within the range the mark has just passed, each once. Runs of
        stored readings are counted a chunk of seqs at a time. One round trip per step."""
        covered = sorted(covered)

        def chain(ack):
            for a, b in covered:
                if a <= ack + 1 and b > ack:
                    ack = b
            return ack

        looked = ack + 1        # gaps starting at or below this were considered
        ack = chain(ack)
        while True:
            cur.execute(_RUN_THEN_GAP, {"d": device, "ack": ack, "hi": ack + _RUN_CHUNK,
                                        "looked": looked})
            n, top = cur.fetchone()
            ack += n
            looked = ack + 1
            moved = n == _RUN_CHUNK          # the run may go on past the chunk
            if top is not None and top > ack:
                ack, moved = top, True
            nxt = chain(ack)
            if nxt != ack:
                ack, moved = nxt, True
            if not moved:
                return ack

    @staticmethod
    def _insert_gap(cur, device, seq_from, seq_to, why, reason, now):
        """Record seq_from..seq_to as a gap `why`, only the seqs no gap of that kind covers
        yet (a device resends pending gaps merged wider: see SQLiteStore._insert_gap). Gaps
        of one kind never overlap, so the ones touching the range are those starting in it
        and the one before it."""
        cur.execute(
            "(SELECT seq_from, seq_to FROM gaps WHERE device = %(d)s AND why = %(w)s"
            "  AND seq_from < %(a)s ORDER BY seq_from DESC LIMIT 1)"
            " UNION ALL (SELECT seq_from, seq_to FROM gaps WHERE device = %(d)s"
            "  AND why = %(w)s AND seq_from >= %(a)s AND seq_from <= %(b)s)"
            " ORDER BY 1", {"d": device, "w": why, "a": seq_from, "b": seq_to})
        rows = []
        lo = seq_from
        for a, b in cur.fetchall():
            if b < lo:
                continue
            if a > lo:
                rows.append((device, lo, a - 1, why, now, reason))
            lo = max(lo, b + 1)
        if lo <= seq_to:
            rows.append((device, lo, seq_to, why, now, reason))
        added = 0
        for row in rows:   # one or two pieces: a resent gap is mostly what is stored already
            cur.execute("INSERT INTO gaps (device, seq_from, seq_to, why, received, reason)"
                        " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING", row)
            if cur.rowcount == 1:
                added += row[2] - row[1] + 1
        if why == "dropped" and added:
            # the device's dropped count, kept with it: not summed over its gaps per message
            cur.execute("UPDATE devices SET dropped = dropped + %s WHERE device = %s",
                        (added, device))

    def _add_readings(self, cur, device, readings, boot=None, epoch="", rejected=()):
        now = time.time()
        epoch = epoch or ""
        cols = ([], [], [], [], [], [], [])
        for r in readings:
            ts = r.get("ts")
            for col, x in zip(cols, (r["q"], None if ts is None else float(ts), r.get("up"),
                                     r["n"], encode_value(r.get("v")), r.get("u"), r.get("e"))):
                col.append(x)
        # One statement locks the device (as _lock_device) and inserts the batch; RETURNING
        # names the seqs that were not there. Safe without the lock first: the unique key
        # decides what is new even against a concurrent writer, and what follows (the ack)
        # runs in later statements, after the lock.
        cur.execute(
            "WITH d AS (INSERT INTO devices (device, first_seen, last_seen)"
            "  VALUES (%(d)s, %(now)s, %(now)s) ON CONFLICT (device)"
            "  DO UPDATE SET last_seen = EXCLUDED.last_seen RETURNING ack),"
            " ins AS (INSERT INTO readings (device, seq, boot, ts, up, name, value, unit, err,"
            "  received, epoch)"
            "  SELECT %(d)s, q, %(boot)s, ts, up, n, v::numeric, u, e, %(now)s, %(epoch)s"
            "  FROM unnest(%(q)s::bigint[], %(ts)s::float8[], %(up)s::bigint[], %(n)s::text[],"
            "  %(v)s::text[], %(u)s::text[], %(e)s::text[]) AS t(q, ts, up, n, v, u, e)"
            "  ON CONFLICT (device, seq) DO NOTHING RETURNING seq)"
            " SELECT (SELECT ack FROM d), ARRAY(SELECT seq FROM ins)",
            {"d": device, "now": now, "boot": boot, "epoch": epoch, "q": cols[0],
             "ts": cols[1], "up": cols[2], "n": cols[3], "v": cols[4], "u": cols[5],
             "e": cols[6]})
        ack, fresh = cur.fetchone()
        fresh = set(fresh)
        new = []
        for r in readings:
            if r["q"] in fresh:
                fresh.discard(r["q"])           # a seq twice in one batch: the first is new
                new.append(r)
        covered = []
        for seq, reason in rejected:
            self._insert_gap(cur, device, seq, seq, "rejected", reason, now)
            covered.append((seq, seq))
        new_ack = self._advance(cur, device, ack, covered)
        if new:
            cur.execute("UPDATE devices SET readings = readings + %s,"
                        " last_seq = GREATEST(last_seq, %s), ack = %s WHERE device = %s",
                        (len(new), max(r["q"] for r in new), new_ack, device))
        elif new_ack != ack:
            cur.execute("UPDATE devices SET ack = %s WHERE device = %s", (new_ack, device))
        return new_ack, [dict(r, boot=boot, epoch=epoch, received=now) for r in new]

    def _add_gap(self, cur, device, seq_from, seq_to, why, reason=None):
        now = time.time()
        ack, _, _, _ = self._lock_device(cur, device, now)
        self._insert_gap(cur, device, seq_from, seq_to, why, reason, now)
        new_ack = self._advance(cur, device, ack, [(seq_from, seq_to)])
        if new_ack != ack:
            cur.execute("UPDATE devices SET ack = %s WHERE device = %s", (new_ack, device))
        return new_ack

    def _enter_epoch(self, cur, device, epoch, next_seq):
        # The decision of docs/protocol.md "Epochs", as SQLiteStore.enter_epoch makes it.
        now = time.time()
        ack, cur_epoch, offset, last_seq = self._lock_device(cur, device, now)
        out = {"epoch": cur_epoch, "offset": offset, "started": False, "previous": cur_epoch,
               "lost": None, "ack": ack}
        if not epoch or epoch == cur_epoch:
            return out
        out["epoch"] = epoch
        if not cur_epoch and next_seq + offset > ack:
            cur.execute("INSERT INTO epochs (device, epoch, seq_offset, started_at, previous)"
                        " VALUES (%s, %s, %s, %s, %s)", (device, epoch, offset, now, cur_epoch))
            cur.execute("UPDATE devices SET epoch = %s WHERE device = %s", (epoch, device))
            return out
        cur.execute("SELECT MAX(seq_to) FROM gaps WHERE device = %s", (device,))
        top = max(cur.fetchone()[0] or 0, ack, last_seq)
        cur.execute("INSERT INTO epochs (device, epoch, seq_offset, started_at, previous)"
                    " VALUES (%s, %s, %s, %s, %s)", (device, epoch, top, now, cur_epoch))
        cur.execute("UPDATE devices SET epoch = %s, epoch_offset = %s WHERE device = %s",
                    (epoch, top, device))
        out.update(offset=top, started=True)
        if ack < top:
            self._insert_gap(cur, device, ack + 1, top, "lost",
                             "epoch %s replaced %s" % (epoch, cur_epoch or '""'), now)
            out["ack"] = self._advance(cur, device, ack, [(ack + 1, top)])
            cur.execute("UPDATE devices SET ack = %s WHERE device = %s", (out["ack"], device))
            out["lost"] = (ack + 1, top)
        return out

    def _record_hello(self, cur, device, hello):
        self._lock_device(cur, device, time.time())
        cur.execute("UPDATE devices SET hello = %s WHERE device = %s",
                    (json.dumps(hello), device))

    def _record_health(self, cur, device, health):
        now = time.time()
        body = json.dumps(health)
        self._lock_device(cur, device, now)
        cur.execute("INSERT INTO health (device, received, body) VALUES (%s, %s, %s)",
                    (device, now, body))
        if self.keep_health:
            # the newest keep_health stay: those past them in health_by_device order go (a
            # walk of keep_health index entries, no sort)
            cur.execute("DELETE FROM health WHERE ctid IN (SELECT ctid FROM health"
                        " WHERE device = %s ORDER BY received DESC OFFSET %s)",
                        (device, self.keep_health))
        cur.execute("UPDATE devices SET health = %s, health_at = %s WHERE device = %s",
                    (body, now, device))

    @staticmethod
    def _runner(cur):
        def run(sql, args):
            cur.execute(sql.replace("?", "%s"), args)
            return cur.fetchall() if cur.description else []
        return run

    def _set_desired(self, cur, device, output, change, who):
        # Two collectors setting the same output at once: one after the other (the first
        # change to an output has no row to lock yet, so the lock is on its name).
        cur.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                    (_OUTPUT_LOCK, device + "/" + output))
        return set_desired_in(self._runner(cur), device, output, change, who, time.time())

    def _record_reported(self, cur, device, out):
        return record_reported_in(self._runner(cur), device, out, time.time(), encode_value,
                                  "?::numeric")

    # -- reading ---------------------------------------------------------------------------

    def _query(self, query, args=()):
        with self._lock:
            conn = self._connection()
            try:
                return conn.execute(query, args).fetchall()
            except psycopg.Error as e:
                if conn.broken or isinstance(e, (psycopg.OperationalError,
                                                 psycopg.InterfaceError)):
                    self._drop_connection()
                raise StoreError("database failed: %s" % _first_line(e)) from e

    def ack(self, device):
        rows = self._query("SELECT ack FROM devices WHERE device = %s", (device,))
        return rows[0][0] if rows else 0

    def readings(self, device, since=0, limit=None):
        q = ("SELECT " + _READING_COLS + " FROM readings r WHERE r.device = %s AND r.seq > %s"
             " ORDER BY r.seq")
        args = [device, since]
        if limit is not None:
            q += " LIMIT %s"
            args.append(int(limit))
        return [_row(r) for r in self._query(q, args)]

    def latest(self, device, limit=20):
        rows = self._query("SELECT " + _READING_COLS + " FROM readings r WHERE r.device = %s"
                           " ORDER BY r.seq DESC LIMIT %s", (device, int(limit)))
        return [_row(r) for r in rows]

    def gaps(self, device):
        rows = self._query("SELECT seq_from, seq_to, why, received, reason FROM gaps"
                           " WHERE device = %s ORDER BY seq_from, seq_to", (device,))
        out = []
        for a, b, w, t, reason in rows:
            g = {"from": a, "to": b, "why": w, "received": t}
            if reason is not None:
                g["reason"] = reason
            out.append(g)
        return out

    def dropped(self, device):
        rows = self._query("SELECT dropped FROM devices WHERE device = %s", (device,))
        return int(rows[0][0]) if rows else 0

    def epochs(self, device):
        rows = self._query("SELECT epoch, seq_offset, started_at, previous FROM epochs"
                           " WHERE device = %s ORDER BY started_at, seq_offset", (device,))
        return epoch_dicts(rows)

    def devices(self):
        rows = self._query(
            "SELECT d.device, d.ack, d.readings, d.last_seq, d.first_seen, d.last_seen,"
            " d.hello, d.health, d.health_at, d.epoch, d.epoch_offset, d.dropped,"
            " (SELECT COUNT(*) FROM gaps g WHERE g.device = d.device)"
            " FROM devices d ORDER BY d.device")
        out = []
        for (dev, ack, n, last, first_seen, last_seen, hello, health, health_at, epoch, offset,
             dropped, ngaps) in rows:
            out.append({"device": dev, "ack": ack, "readings": n, "last_seq": last,
                        "first_seen": first_seen, "last_seen": last_seen,
                        "hello": json.loads(hello) if hello else None,
                        "health": json.loads(health) if health else None,
                        "health_at": health_at, "dropped_gaps": int(dropped),
                        "gaps": ngaps, "epoch": epoch, "epoch_offset": offset})
        return out

    _FLOOR = "floor(%s)::bigint"

    def _sql(self, sql):
        return sql.replace("?", "%s")

    def health_series(self, device, key, start, end, buckets):
        if key not in HEALTH_SERIES:
            raise ValueError("not a health series: %r" % (key,))
        start, width, buckets = bucket_plan(start, end, buckets)
        # a field that is not a number (null, or text from a device's extras) is left out
        rows = self._query(
            "SELECT b, MIN(x), AVG(x), MAX(x), COUNT(*) FROM (SELECT"
            " floor((received - %(s)s) / %(w)s)::bigint AS b, CASE WHEN"
            " json_typeof(body::json -> %(k)s) = 'number' THEN (body::json ->> %(k)s)::float8"
            " END AS x FROM health WHERE device = %(d)s AND received >= %(s)s"
            " AND received < %(e)s) t WHERE x IS NOT NULL GROUP BY b ORDER BY b",
            {"s": start, "w": width, "k": key, "d": device, "e": float(end)})
        return bucket_rows(rows, start, width, buckets)

    def close(self):
        with self._lock:
            self._closed = True
            self._drop_connection()


class _OpFailed(Exception):
    """One op of a group failed on its data; `error` is what its result slot holds."""

    def __init__(self, error):
        super().__init__(error)
        self.error = error


def _first_line(e):
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__

