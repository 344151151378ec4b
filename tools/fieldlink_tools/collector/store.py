"""The collector's storage: the `Store` interface the server talks to, and `SQLiteStore`, the
embedded default. A bigger database can follow by implementing the same methods.

Contract (docs/protocol.md, "Cumulative ack"): each (device, seq) is stored once whatever is
resent; `ack(device)` is the largest N such that every seq <= N is stored or covered by a gap;
a method that changes data returns the new ack only after its transaction has committed.

Seqs here are the store's: one space per device that only grows. A device whose persistent
state was wiped starts again at 1 under a new `epoch` (docs/protocol.md "Epochs"); the store
gives each epoch an offset above everything stored so far, and the server adds it to what the
device sends (and subtracts it from the acks it sends back).
"""
import functools
import json
import sqlite3
import threading
import time


class StoreError(Exception):
    """The store could not do what was asked (I/O error, disk full, closed)."""


class StoreDataError(StoreError):
    """One operation failed on its own data (a constraint, a value the database cannot hold):
    only that operation was rolled back; retrying it unchanged fails the same way."""


# The operations `Store.apply` takes, by method name: the ones that write.
WRITE_OPS = ("add_readings", "add_gap", "enter_epoch", "record_hello", "record_health",
             "set_desired", "record_reported")

# History and health over time (docs/collector.md "History"): at most this many buckets.
MAX_BUCKETS = 500
# The health fields that can be drawn over time (each a number in the stored health body).
HEALTH_SERIES = ("heap_free", "heap_min", "rssi", "reconnects", "dropped", "held")


class Store:
    """What the server needs from a store. Methods are blocking; the server calls them from
    one worker thread, in order, so implementations need not be safe for concurrent use.
    Failures are raised as StoreError; nothing of what failed may be acked.

    Writes go through `apply` (the server's group committer batches many devices' messages
    into one durable commit); each single write method is `apply([(name, args)])[0]`."""

    def apply(self, ops):
        """Run `ops`, a list of (method_name, args_tuple) with method_name in WRITE_OPS, in
        order in ONE transaction (one durable commit). Each op runs inside its own savepoint:
        an op that fails on its data rolls back alone and its slot in the returned list holds
        a StoreDataError instance (the cause chained), while the others commit. Every other
        slot holds exactly what the single method returns. A failure of the transaction
        itself (I/O, disk full, commit, closed) raises StoreError: nothing of the group was
        stored. The results are returned only after the commit."""
        raise NotImplementedError

    def _one(self, name, *args):
        out = self.apply([(name, args)])[0]
        if isinstance(out, BaseException):
            raise out
        return out

    def add_readings(self, device, readings, boot=None, epoch="", rejected=()):
        """Store readings (dicts with q, ts, up, n, v, u, e; q in the store's seq space) in one
        transaction, tagged with `epoch`; each (seq, reason) in `rejected` is recorded in the
        same transaction as a one-seq gap `rejected`. Returns (ack, new): the ack after the
        commit, and the readings that were not stored before (resends are ignored), each with
        `boot`, `epoch` and `received` added."""
        return self._one("add_readings", device, readings, boot, epoch, tuple(rejected))

    def add_gap(self, device, seq_from, seq_to, why, reason=None):
        """Record that seqs seq_from..seq_to (inclusive) will never arrive (`reason`: free
        text, for server-side gaps); return the new ack."""
        return self._one("add_gap", device, seq_from, seq_to, why, reason)

    def enter_epoch(self, device, epoch, next_seq):
        """A hello said `epoch` ("" when it had none) and `next` (device numbering).
        Returns a dict: epoch and offset to use on this connection, `started` (a new epoch
        began: offset = the highest seq stored or in a gap), `previous` (the epoch before),
        `lost` ((from, to) recorded as gap `lost` when the old epoch left a hole below the
        new offset, else None) and `ack` (the store's ack afterwards)."""
        return self._one("enter_epoch", device, epoch, next_seq)

    def epochs(self, device):
        """Epochs a device has announced, oldest first: dicts epoch, offset, started_at,
        previous."""
        raise NotImplementedError

    def ack(self, device):
        """The cumulative ack for a device (0 when nothing is known)."""
        raise NotImplementedError

    def record_hello(self, device, hello):
        """Remember the last `hello` of a device (firmware, board, boot, dropped, ...)."""
        return self._one("record_hello", device, hello)

    def record_health(self, device, health):
        """Store one `health` message."""
        return self._one("record_health", device, health)

    def record_ota(self, device, offer, version, state, reason=None):
        """Record one step of a firmware update (docs/ota.md)."""
        raise NotImplementedError

    def ota_history(self, device, limit=100):
        """A device's firmware update steps, oldest first."""

    def set_desired(self, device, output, change, who):
        """Change the desired state of one output: `change` holds "v" and/or "rule" (a rule of
        None removes it); the rest of the record stays. In one transaction: the new version
        (the stored one + 1, from 1: it only grows) and an audit row (who, when, from, to).
        Returns the new record: dict out, ver, v, rule (when there is one), set_by, set_at."""
        return self._one("set_desired", device, output, dict(change), who)

    def record_reported(self, device, out):
        """Store a device's `reported` outputs ({name: {v, ver, why, err}}); an output whose
        ver is below the one stored is ignored (a late message never rolls the state back).
        Returns {name: row} of the ones stored."""
        return self._one("record_reported", device, out)

    # The control reads are the same SQL on both stores: `?` placeholders (turned into the
    # store's own by _sql), the bucket's floor written as _FLOOR.
    _FLOOR = "CAST(%s AS INTEGER)"   # the argument is >= 0 here, so truncation is the floor

    def _sql(self, sql):
        return sql

    def desired(self, device):
        """{output: record} of a device (records as set_desired returns them)."""
        rows = self._query(self._sql("SELECT output, ver, body, set_by, set_at FROM"
                                     " outputs_desired WHERE device=? ORDER BY output"),
                           (device,))
        return {o: desired_record(o, v, json.loads(b), w, t) for o, v, b, w, t in rows}

    def health_history(self, device, limit=100):
        """A device's newest health messages, newest first, each with `received`."""
        rows = self._query(self._sql("SELECT received, body FROM health WHERE device=?"
                                     " ORDER BY received DESC LIMIT ?"), (device, int(limit)))
        return [dict(json.loads(b), received=t) for t, b in rows]

    def reported(self, device):
        """{output: {v, ver, why, err, at}} of a device."""
        rows = self._query(self._sql("SELECT output, ver, v, why, err, at FROM"
                                     " outputs_reported WHERE device=? ORDER BY output"),
                           (device,))
        return {o: reported_row(ver, _num(v), why, err, at) for o, ver, v, why, err, at in rows}

    def audit(self, device, limit=100):
        """The newest changes of a device's outputs first: dicts out, at, who, ver, from, to."""
        rows = self._query(self._sql('SELECT output, at, who, ver, "from", "to" FROM'
                                     " outputs_audit WHERE device=? ORDER BY at DESC, ver DESC"
                                     " LIMIT ?"), (device, int(limit)))
        return [audit_row(*r) for r in rows]

    def history(self, device, name, start, end, buckets):
        """Readings `name` of a device with start <= ts < end (ts: the device's time, the
        server's `received` for readings sent before the clock was set), in `buckets` equal
        buckets: [[bucket start, min, avg, max, count], ...] for the buckets that hold a
        number, oldest first; computed by the database (bucket = floor((ts - start)/width))."""
        start, width, buckets = bucket_plan(start, end, buckets)
        rows = self._query(self._sql(
            "SELECT b, MIN(value), AVG(value), MAX(value), COUNT(*) FROM (SELECT "
            + self._FLOOR % "(COALESCE(ts, received) - ?) / ?" + " AS b, value FROM readings"
            " WHERE device=? AND name=? AND COALESCE(ts, received) >= ?"
            " AND COALESCE(ts, received) < ? AND value IS NOT NULL) t GROUP BY b ORDER BY b"),
            (start, width, device, name, start, float(end)))
        return bucket_rows(rows, start, width, buckets)

    def health_series(self, device, key, start, end, buckets):
        """The same for one field of the health messages (key in HEALTH_SERIES), by the time
        they were received."""
        raise NotImplementedError

    def readings(self, device, since=0, limit=None):
        """Readings of a device with seq > since, oldest first, as dicts (q: the store's
        seq; epoch, and dq: the seq as the device numbered it in that epoch)."""
        raise NotImplementedError

    def latest(self, device, limit=20):
        """The newest readings of a device, newest first."""
        raise NotImplementedError

    def gaps(self, device):
        """Gaps of a device, as dicts with from, to, why, received and, for server-side
        gaps, reason."""
        raise NotImplementedError

    def dropped(self, device):
        """How many seqs of a device lie in gaps `dropped` (each counted once)."""
        raise NotImplementedError

    def devices(self):
        """One summary dict per device that ever sent something."""
        raise NotImplementedError

    def probe(self):
        """Raise StoreError unless the store takes writes right now (for /healthz)."""

    def close(self):
        raise NotImplementedError


_SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    device     TEXT PRIMARY KEY,
    ack        INTEGER NOT NULL DEFAULT 0,   -- contiguous high-water mark: every seq <= ack
                                             -- is stored or in a gap
    readings   INTEGER NOT NULL DEFAULT 0,   -- count of stored readings
    last_seq   INTEGER NOT NULL DEFAULT 0,   -- highest stored seq
    first_seen REAL,
    last_seen  REAL,
    hello      TEXT,                         -- last hello, JSON
    health     TEXT,                         -- last health, JSON
    health_at  REAL,
    epoch      TEXT NOT NULL DEFAULT '',     -- current epoch ('' = device never sent one)
    epoch_offset INTEGER NOT NULL DEFAULT 0, -- store seq = device seq + this
    dropped    INTEGER NOT NULL DEFAULT 0    -- seqs in gaps 'dropped', each counted once
);
CREATE TABLE IF NOT EXISTS ota (
    device   TEXT NOT NULL,
    offer    TEXT NOT NULL,
    version  TEXT NOT NULL,
    state    TEXT NOT NULL,     -- offered, accepted, receiving, staged, trial, confirmed,
                                -- refused, rolled_back (docs/ota.md)
    reason   TEXT,
    at       REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS ota_by_device ON ota (device);
CREATE TABLE IF NOT EXISTS readings (
    device   TEXT NOT NULL,
    seq      INTEGER NOT NULL,
    boot     INTEGER,          -- boot count from the connection's hello (places unsynced ts)
    ts       REAL,             -- device Unix time, NULL until its clock was synced
    up       INTEGER,          -- ms since boot
    name     TEXT NOT NULL,
    value,                     -- no affinity: ints stay ints, floats stay floats, NULL allowed
    unit     TEXT,
    err      TEXT,
    received REAL NOT NULL,    -- server time when stored
    epoch    TEXT NOT NULL DEFAULT '',   -- the device's epoch when it sent this reading
    PRIMARY KEY (device, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS gaps (
    device   TEXT NOT NULL,
    seq_from INTEGER NOT NULL,
    seq_to   INTEGER NOT NULL,
    why      TEXT NOT NULL,
    received REAL NOT NULL,
    reason   TEXT,             -- server-side gaps (lost, rejected): why, for a human
    PRIMARY KEY (device, seq_from, seq_to, why)   -- a resent gap is stored once
);
CREATE INDEX IF NOT EXISTS gaps_by_to ON gaps (device, seq_to);
CREATE INDEX IF NOT EXISTS gaps_by_why ON gaps (device, why, seq_from);
CREATE TABLE IF NOT EXISTS health (
    device   TEXT NOT NULL,
    received REAL NOT NULL,
    body     TEXT NOT NULL     -- the health message, JSON
);
CREATE INDEX IF NOT EXISTS health_by_device ON health (device, received);
CREATE TABLE IF NOT EXISTS epochs (
    device     TEXT NOT NULL,
    epoch      TEXT NOT NULL,
    seq_offset INTEGER NOT NULL,   -- store seq = device seq + seq_offset while it lasts
    started_at REAL NOT NULL,
    previous   TEXT NOT NULL       -- the epoch it replaced ('' = none / pre-epoch firmware)
);
CREATE INDEX IF NOT EXISTS epochs_by_device ON epochs (device, epoch, seq_offset);
CREATE TABLE IF NOT EXISTS outputs_desired (
    device  TEXT NOT NULL,
    output  TEXT NOT NULL,
    ver     INTEGER NOT NULL,      -- only grows: the stored one + 1 at every change
    body    TEXT NOT NULL,         -- {"v": ..., "rule": {...}} JSON
    set_by  TEXT NOT NULL,
    set_at  REAL NOT NULL,
    PRIMARY KEY (device, output)
);
CREATE TABLE IF NOT EXISTS outputs_reported (
    device  TEXT NOT NULL,
    output  TEXT NOT NULL,
    ver     INTEGER NOT NULL,      -- the desired ver the device last applied (0: none)
    v,                             -- the value the device actually set (no affinity)
    why     TEXT NOT NULL,
    err     TEXT,
    at      REAL NOT NULL,         -- server time when stored
    PRIMARY KEY (device, output)
);
CREATE TABLE IF NOT EXISTS outputs_audit (
    device  TEXT NOT NULL,
    output  TEXT NOT NULL,
    at      REAL NOT NULL,
    who     TEXT NOT NULL,
    ver     INTEGER NOT NULL,
    "from"  TEXT,                  -- the record's body before (NULL: there was none), JSON
    "to"    TEXT NOT NULL          -- and after
);
CREATE INDEX IF NOT EXISTS outputs_audit_by_device ON outputs_audit (device, at);
"""

# Columns added since the first schema: a database created before them gets them (with their
# defaults) when a SQLiteStore opens it.
_ADDED_COLUMNS = (
    ("devices", "epoch", "TEXT NOT NULL DEFAULT ''"),
    ("devices", "epoch_offset", "INTEGER NOT NULL DEFAULT 0"),
    ("readings", "epoch", "TEXT NOT NULL DEFAULT ''"),
    ("gaps", "reason", "TEXT"),
    ("devices", "dropped", "INTEGER NOT NULL DEFAULT 0"),
)
# What a column added later holds for the rows that were there: computed once, at the
# migration that adds it.
_BACKFILL = {
    ("devices", "dropped"): "UPDATE devices SET dropped=(SELECT COALESCE(SUM(seq_to-seq_from+1),"
                            "0) FROM gaps g WHERE g.device=devices.device AND g.why='dropped')",
}

# A reading row as the read methods return it; dq is the device's own number for the seq:
# minus the offset of the latest start of its epoch below it (0 before any epoch).
_READING_COLS = (
    "r.seq, r.boot, r.ts, r.up, r.name, r.value, r.unit, r.err, r.received, r.epoch,"
    " r.seq - COALESCE((SELECT MAX(e.seq_offset) FROM epochs e WHERE e.device=r.device"
    " AND e.epoch=r.epoch AND e.seq_offset<r.seq), 0)")
# The same from a database a SQLiteStore has not opened since the epochs came (read-only).
_READING_COLS_V1 = ("r.seq, r.boot, r.ts, r.up, r.name, r.value, r.unit, r.err, r.received,"
                    " '', r.seq")


# An op that fails on its own data (the savepoint takes it back alone): a constraint, a value
# SQLite cannot hold (an int past 64 bits, a lone surrogate), a field missing or of the wrong
# type. Anything else from sqlite3 (I/O, disk full, locked, corrupt) fails the whole group.
_DATA_ERRORS = (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.InterfaceError,
                sqlite3.ProgrammingError, OverflowError, ValueError, TypeError, KeyError)


_ROWS_PER_INSERT = 500   # 11 parameters a row: well under SQLite's 32,766 per statement


_DEVICES_PER_UPSERT = 1000


def _reading_row(device, r, boot, epoch, now):
    """The 11 values of one readings row, in _insert_readings_sql's column order."""
    return (device, r["q"], boot, r.get("ts"), r.get("up"), r["n"], r.get("v"), r.get("u"),
            r.get("e"), now, epoch)


def _new_readings(readings, stored):
    """The readings whose seq is in `stored` (just inserted), each seq once, in order."""
    new, seen = [], set()
    for r in readings:
        q = r["q"]
        if q in stored and q not in seen:
            seen.add(q)
            new.append(r)
    return new


def _rows(n, width):
    """n rows of `width` placeholders, for a multi-row VALUES."""
    return ",".join(["(" + ",".join("?" * width) + ")"] * n)


# The statements of the bulk path, one text per row count (cached: sqlite3 keeps them
# prepared by their text).
@functools.lru_cache(maxsize=None)
def _insert_readings_sql(n, with_device=False):
    return ("INSERT INTO readings (device, seq, boot, ts, up, name, value, unit, err, received,"
            " epoch) VALUES %s ON CONFLICT (device, seq) DO NOTHING RETURNING %s"
            % (_rows(n, 11), "device, seq" if with_device else "seq"))


@functools.lru_cache(maxsize=None)
def _upsert_devices_sql(n):
    return ("INSERT INTO devices (device, first_seen, last_seen) VALUES %s ON CONFLICT (device)"
            " DO UPDATE SET last_seen=excluded.last_seen RETURNING device, ack, last_seq"
            % _rows(n, 3))


@functools.lru_cache(maxsize=None)
def _gaps_passed_sql(n):
    # per device: the furthest-reaching stored gap starting in lo..hi, through the primary
    # key's index by name (left to itself, the planner takes gaps_by_to for the correlated
    # range and reads every gap of the device)
    return ("WITH v(device, lo, hi) AS (VALUES %s) SELECT v.device, (SELECT MAX(g.seq_to)"
            " FROM gaps g INDEXED BY sqlite_autoindex_gaps_1 WHERE g.device=v.device"
            " AND g.seq_from>v.lo AND g.seq_from<=v.hi) FROM v" % _rows(n, 3))


@functools.lru_cache(maxsize=None)
def _update_devices_sql(n):
    return ("WITH v(device, n, top, ack) AS (VALUES %s) UPDATE devices SET"
            " readings=devices.readings+v.n, last_seq=MAX(devices.last_seq, v.top), ack=v.ack"
            " FROM v WHERE devices.device=v.device" % _rows(n, 4))


def _columns(db, table):
    return {row[1] for row in db.execute("PRAGMA table_info(%s)" % table)}


DEFAULT_KEEP_HEALTH = 10080  # a week of health messages at the firmware's default 60 s


class SQLiteStore(Store):
    """SQLite in WAL mode; one transaction per `apply` group; the ack is kept in
    `devices.ack` and advanced inside the same transaction that stores the batch, so it is
    never rescanned."""

    def __init__(self, path, synchronous="FULL", keep_health=DEFAULT_KEEP_HEALTH):
        self.path = str(path)
        # health messages kept per device, the newest (0: all): a device sends one a minute
        # for months, each a row; readings and gaps are never pruned
        self.keep_health = int(keep_health)
        # The server uses the store from one worker thread, tests sometimes from another:
        # allow that and serialise with a lock.
        self._lock = threading.Lock()
        if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError("synchronous must be FULL, NORMAL or EXTRA")
        try:
            # statement cache: one readings INSERT per batch size, up to 500 of them
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                       timeout=30, cached_statements=1024)
            self._db.execute("PRAGMA journal_mode=WAL")
            # Durability: an ack is a promise that the readings survive anything, so each
            # commit is fsynced (FULL). NORMAL in WAL mode survives a process crash but may
            # lose the last commits on power loss; it is faster and offered for benchmarks.
            self._db.execute("PRAGMA synchronous=" + synchronous.upper())
            self._db.executescript(_SCHEMA)
            self._migrate()
        except sqlite3.Error as e:
            raise StoreError("cannot open %s: %s" % (self.path, e)) from e

    _reading_cols = _READING_COLS

    def _migrate(self):
        """Add the columns a database made by an older collector lacks (one transaction)."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for table, col, decl in _ADDED_COLUMNS:
                if col not in _columns(db, table):
                    db.execute("ALTER TABLE %s ADD COLUMN %s %s" % (table, col, decl))
                    if (table, col) in _BACKFILL:
                        db.execute(_BACKFILL[table, col])
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    # -- writing -------------------------------------------------------------------------
    #
    # One method per write op, `_op_NAME(db, now, *args)`, run by `apply` inside the group's
    # transaction and the op's savepoint. Each keeps `devices.ack` maximal when it returns
    # (the invariant `_advance` relies on: no stored gap starting at or below ack+1 reaches
    # past ack, and seq ack+1 is not stored).

    def apply(self, ops):
        ops = [(name, tuple(args)) for name, args in ops]
        for name, _ in ops:
            if name not in WRITE_OPS:
                raise ValueError("not a store write op: %r" % (name,))
        if not ops:
            return []
        with self._lock:
            db = self._db
            if db is None:
                raise StoreError("store is closed")
            now = time.time()
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    try:
                        # Almost every group is all good data: run it without savepoints
                        # (two statements less per op)...
                        out = self._run_ops(db, now, ops, False)
                    except _DATA_ERRORS:
                        # ...and when one op fails on its data, start the group over with a
                        # savepoint per op, so that only that op is rolled back.
                        db.execute("ROLLBACK")
                        db.execute("BEGIN IMMEDIATE")
                        out = self._run_ops(db, now, ops, True)
                    db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as e:
                raise StoreError(str(e)) from e
            return out

    def _run_ops(self, db, now, ops, savepoints):
        if not savepoints:
            return self._run_bulk(db, now, ops)
        out = []
        for name, args in ops:
            fn = getattr(self, "_op_" + name)
            db.execute("SAVEPOINT op")
            try:
                res = fn(db, now, *args)
            except _DATA_ERRORS as e:
                db.execute("ROLLBACK TO op")
                db.execute("RELEASE op")
                err = StoreDataError("%s: %s: %s" % (name, type(e).__name__, e))
                err.__cause__ = e
                out.append(err)
                continue
            db.execute("RELEASE op")
            out.append(res)
        return out

    def _run_bulk(self, db, now, ops):
        """The ops in order; each run of consecutive batches (add_readings without rejected
        readings, one per device) as a handful of statements for the whole run instead of
        several per batch: every statement costs a round through sqlite3 and the GIL, which
        the store thread shares with the event loop on one core."""
        out = [None] * len(ops)
        run, devs = [], set()

        def flush():
            if run:
                self._bulk_readings(db, now, [ops[i][1] for i in run], out, run)
                run.clear()
                devs.clear()
        for i, (name, args) in enumerate(ops):
            if name == "add_readings" and len(args) >= 2 and not (args[4:5] and args[4]):
                if args[0] in devs:
                    flush()
                run.append(i)
                devs.add(args[0])
                continue
            flush()
            out[i] = getattr(self, "_op_" + name)(db, now, *args)
        flush()
        return out

    def _bulk_readings(self, db, now, batches, out, slots):
        """add_readings for several devices at once (distinct devices, no rejected): the same
        results as one _op_add_readings each, in 4 statements (+ chunks) for all of them."""
        state = {}
        for i in range(0, len(batches), _DEVICES_PER_UPSERT):
            chunk = batches[i:i + _DEVICES_PER_UPSERT]
            args = []
            for b in chunk:
                args += (b[0], now, now)
            for dev, ack, last_seq in db.execute(_upsert_devices_sql(len(chunk)), args):
                state[dev] = (ack, last_seq)
        rows = []
        for b in batches:
            device, readings = b[0], b[1]
            boot = b[2] if len(b) > 2 else None
            epoch = (b[3] if len(b) > 3 else "") or ""
            for r in readings:
                rows += _reading_row(device, r, boot, epoch, now)
        stored = {}
        width = _ROWS_PER_INSERT * 11
        for i in range(0, len(rows), width):
            chunk = rows[i:i + width]
            for dev, q in db.execute(_insert_readings_sql(len(chunk) // 11, True), chunk):
                stored.setdefault(dev, set()).add(q)
        # the mark of each device: followed in Python where nothing was stored above the ack
        # before, then one query for all of them: a stored gap starting where it passed?
        marks, check = {}, []
        for b in batches:
            device = b[0]
            ack, last_seq = state[device]
            got = stored.get(device, ())
            if last_seq <= ack:
                a = ack
                while a + 1 in got:
                    a += 1
                marks[device] = a
                if a > ack:
                    check += (device, ack + 1, a + 1)
            else:
                marks[device] = self._advance(db, device, ack)
        if check:
            for dev, top in db.execute(_gaps_passed_sql(len(check) // 3), check):
                if top is not None:
                    # a gap continues the run: the general walk from there (rare)
                    marks[dev] = self._advance(db, dev, marks[dev], [(marks[dev] + 1, top)])
        upd = []
        for b, slot in zip(batches, slots):
            device, readings = b[0], b[1]
            boot = b[2] if len(b) > 2 else None
            epoch = (b[3] if len(b) > 3 else "") or ""
            got = stored.get(device, ())
            new = _new_readings(readings, got)
            ack, last_seq = state[device]
            new_ack = marks[device]
            if new or new_ack != ack:
                upd += (device, len(new), max(got) if got else last_seq, new_ack)
            out[slot] = (new_ack, [dict(r, boot=boot, epoch=epoch, received=now)
                                   for r in new])
        for i in range(0, len(upd), _DEVICES_PER_UPSERT * 4):
            chunk = upd[i:i + _DEVICES_PER_UPSERT * 4]
            db.execute(_update_devices_sql(len(chunk) // 4), chunk)

    @staticmethod
    def _ensure_device(db, device, now):
        """The device's row (made on first use) with last_seen now; returns (ack, last_seq)."""
        return db.execute(
            "INSERT INTO devices (device, first_seen, last_seen) VALUES (?,?,?)"
            " ON CONFLICT (device) DO UPDATE SET last_seen=excluded.last_seen"
            " RETURNING ack, last_seq", (device, now, now)).fetchone()

    @staticmethod
    def _advance(db, device, ack, new_gaps=(), above=None):
        """Move the contiguous high-water mark up as far as stored readings and gaps allow.
        `new_gaps`: (from, to) of gaps written in this op. By the invariant above, a stored
        gap can only matter if it was written now or starts above the old ack+1; the stored
        ones are found by their start (primary key (device, seq_from, ...)) in the range the
        mark passes over, each range looked at once: the work is that of the new data and of
        the gaps the mark passes, never of a device's whole gap list.
        `above`: when the caller knows them, the seqs of every reading stored above `ack`
        (a device streaming in order: just the ones this op stored), so the run of readings
        is followed without a query."""
        scanned = ack + 1          # stored gaps starting at or below this: already passed
        while True:
            top = ack
            for a, b in new_gaps:
                if a <= ack + 1 and b > top:
                    top = b
            if ack + 1 > scanned:
                row = db.execute("SELECT MAX(seq_to) FROM gaps WHERE device=? AND seq_from>?"
                                 " AND seq_from<=?", (device, scanned, ack + 1)).fetchone()
                scanned = ack + 1
                if row[0] is not None and row[0] > top:
                    top = row[0]
            if top > ack:
                ack = top
                continue
            if above is not None:
                if ack + 1 not in above:
                    return ack
                while ack + 1 in above:
                    ack += 1
                continue
            # A stored run starting at ack+1 ends at the first stored seq without a successor
            # (walked in key order: the run's length, once).
            if db.execute("SELECT 1 FROM readings WHERE device=? AND seq=?",
                          (device, ack + 1)).fetchone() is None:
                return ack
            ack = db.execute(
                "SELECT r.seq FROM readings r WHERE r.device=? AND r.seq>? AND NOT EXISTS"
                " (SELECT 1 FROM readings s WHERE s.device=r.device AND s.seq=r.seq+1)"
                " ORDER BY r.seq LIMIT 1", (device, ack)).fetchone()[0]

    def _op_add_readings(self, db, now, device, readings, boot=None, epoch="", rejected=()):
        ack, last_seq = self._ensure_device(db, device, now)
        for seq, reason in rejected:
            self._insert_gap(db, device, seq, seq, "rejected", reason, now)
        epoch = epoch or ""
        stored = set()
        for i in range(0, len(readings), _ROWS_PER_INSERT):
            chunk = readings[i:i + _ROWS_PER_INSERT]
            args = []
            for r in chunk:
                args += _reading_row(device, r, boot, epoch, now)
            # PRIMARY KEY (device, seq) + ON CONFLICT DO NOTHING: a resent reading changes
            # nothing (unlike INSERT OR IGNORE, other constraint failures still raise and
            # roll the op back); RETURNING names the rows that are new. One statement for
            # the batch, not one per reading.
            stored.update(q for q, in db.execute(_insert_readings_sql(len(chunk)), args))
        new = _new_readings(readings, stored)
        # Nothing was stored above the ack before (a device streaming in order): the
        # readings above it are the ones stored now.
        above = {q for q in stored if q > ack} if last_seq <= ack else None
        new_ack = self._advance(db, device, ack, [(q, q) for q, _ in rejected], above)
        if new:
            top = max(r["q"] for r in new)
            db.execute("UPDATE devices SET readings=readings+?, last_seq=MAX(last_seq,?),"
                       " ack=? WHERE device=?", (len(new), top, new_ack, device))
        elif new_ack != ack:
            db.execute("UPDATE devices SET ack=? WHERE device=?", (new_ack, device))
        return new_ack, [dict(r, boot=boot, epoch=epoch, received=now) for r in new]

    @staticmethod
    def _insert_gap(db, device, seq_from, seq_to, why, reason, now):
        # Only the seqs no gap of this kind covers yet: a device sends its pending gaps again
        # on every connection, merged with newer drops next to them (Outbox.on_connect), so
        # over a flaky link the same seqs came back in wider and wider gaps, one row each,
        # and the dropped count summed them all (50 reconnects: 5640 for 235 dropped).
        # Gaps of one kind never overlap (this function), so the ones that meet
        # seq_from..seq_to are the last one starting below it and those starting inside it:
        # found through gaps_by_why, not by scanning the device's gaps.
        below = db.execute(
            "SELECT seq_from, seq_to FROM gaps WHERE device=? AND why=? AND seq_from<?"
            " ORDER BY seq_from DESC LIMIT 1", (device, why, seq_from)).fetchall()
        inside = db.execute(
            "SELECT seq_from, seq_to FROM gaps WHERE device=? AND why=? AND seq_from>=? AND"
            " seq_from<=? ORDER BY seq_from", (device, why, seq_from, seq_to)).fetchall()
        lo = seq_from
        pieces = []
        for a, b in below + inside:
            if b < lo:
                continue
            if a > lo:
                pieces.append((lo, a - 1))
            if b + 1 > lo:
                lo = b + 1
        if lo <= seq_to:
            pieces.append((lo, seq_to))
        added = 0
        for a, b in pieces:
            if db.execute("INSERT INTO gaps (device, seq_from, seq_to, why, received, reason)"
                          " VALUES (?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                          (device, a, b, why, now, reason)).rowcount == 1:
                added += b - a + 1
        if why == "dropped" and added:
            # the device's dropped count, kept with it: not summed over its gaps per message
            db.execute("UPDATE devices SET dropped=dropped+? WHERE device=?", (added, device))

    def _op_add_gap(self, db, now, device, seq_from, seq_to, why, reason=None):
        ack, last_seq = self._ensure_device(db, device, now)
        self._insert_gap(db, device, seq_from, seq_to, why, reason, now)
        new_ack = self._advance(db, device, ack, [(seq_from, seq_to)],
                                set() if last_seq <= ack else None)
        if new_ack != ack:
            db.execute("UPDATE devices SET ack=? WHERE device=?", (new_ack, device))
        return new_ack

    def _op_enter_epoch(self, db, now, device, epoch, next_seq):
        ack, _ = self._ensure_device(db, device, now)
        cur, offset, last_seq = db.execute(
            "SELECT epoch, epoch_offset, last_seq FROM devices WHERE device=?",
            (device,)).fetchone()
        out = {"epoch": cur, "offset": offset, "started": False, "previous": cur,
               "lost": None, "ack": ack}
        if not epoch or epoch == cur:
            return out   # no epoch (older firmware: numbering as before) or the same one
        out["epoch"] = epoch
        if not cur and next_seq + offset > ack:
            # The first epoch this device announces (new device, or firmware that now sends
            # one and keeps numbering where it was): adopt it, same numbers.
            db.execute("INSERT INTO epochs (device, epoch, seq_offset, started_at,"
                       " previous) VALUES (?,?,?,?,?)", (device, epoch, offset, now, cur))
            db.execute("UPDATE devices SET epoch=? WHERE device=?", (epoch, device))
            return out
        # A new epoch (its persistent state was wiped; or, from "", a device whose counter
        # went back below the ack): its numbers start over above everything this device has
        # stored or declared so far.
        top = db.execute("SELECT MAX(seq_to) FROM gaps WHERE device=?",
                         (device,)).fetchone()[0] or 0
        top = max(top, ack, last_seq)
        db.execute("INSERT INTO epochs (device, epoch, seq_offset, started_at, previous)"
                   " VALUES (?,?,?,?,?)", (device, epoch, top, now, cur))
        db.execute("UPDATE devices SET epoch=?, epoch_offset=? WHERE device=?",
                   (epoch, top, device))
        out.update(offset=top, started=True)
        if ack < top:
            # What the old epoch never delivered went with the wipe; without this gap the ack
            # could never pass it and the new epoch would stall behind it.
            self._insert_gap(db, device, ack + 1, top, "lost",
                             "epoch %s replaced %s" % (epoch, cur or '""'), now)
            out["ack"] = self._advance(db, device, ack, [(ack + 1, top)],
                                       set() if last_seq <= ack else None)
            db.execute("UPDATE devices SET ack=? WHERE device=?", (out["ack"], device))
            out["lost"] = (ack + 1, top)
        return out

    def record_ota(self, device, offer, version, state, reason=None):
        """One step of a firmware update (collector/ota.py) into table `ota`."""
        def tx(db):
            db.execute("INSERT INTO ota (device, offer, version, state, reason, at)"
                       " VALUES (?,?,?,?,?,?)", (device, offer, version, state, reason,
                                                 time.time()))
        self._write(tx)

    def ota_history(self, device, limit=100):
        """The device's update steps, oldest first: dicts of offer, version, state, reason,
        at."""
        rows = self._query("SELECT offer, version, state, reason, at FROM ota WHERE device=?"
                           " ORDER BY rowid DESC LIMIT ?", (device, int(limit)))
        return ota_dicts(rows)

    def _op_set_desired(self, db, now, device, output, change, who):
        return set_desired_in(lambda sql, args: db.execute(sql, args).fetchall(), device,
                              output, change, who, now)

    def _op_record_reported(self, db, now, device, out):
        return record_reported_in(lambda sql, args: db.execute(sql, args).fetchall(),
                                  device, out, now)

    def probe(self):
        """A real, committed write, so /healthz sees a read-only, immutable or broken
        database as the devices would."""
        def tx(db):
            db.execute("CREATE TABLE IF NOT EXISTS probe (id INTEGER PRIMARY KEY, at REAL)")
            db.execute("INSERT OR REPLACE INTO probe (id, at) VALUES (1, ?)", (time.time(),))
        self._write(tx)

    def _write(self, fn):
        """fn(db) in one transaction of its own, outside the devices' groups (seldom writes:
        the health probe, update steps)."""
        with self._lock:
            db = self._db
            if db is None:
                raise StoreError("store is closed")
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    out = fn(db)
                    db.execute("COMMIT")
                    return out
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as e:
                raise StoreError(str(e)) from e

    def _op_record_hello(self, db, now, device, hello):
        body = json.dumps(hello)
        self._ensure_device(db, device, now)
        db.execute("UPDATE devices SET hello=? WHERE device=?", (body, device))

    def _op_record_health(self, db, now, device, health):
        body = json.dumps(health)
        self._ensure_device(db, device, now)
        db.execute("INSERT INTO health (device, received, body) VALUES (?,?,?)",
                   (device, now, body))
        if self.keep_health:
            db.execute("DELETE FROM health WHERE device=? AND rowid <= (SELECT rowid FROM"
                       " health WHERE device=? ORDER BY rowid DESC LIMIT 1 OFFSET ?)",
                       (device, device, self.keep_health))
        db.execute("UPDATE devices SET health=?, health_at=? WHERE device=?",
                   (body, now, device))

    # -- reading -------------------------------------------------------------------------

    def _query(self, sql, args=()):
        with self._lock:
            if self._db is None:
                raise StoreError("store is closed")
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as e:
                raise StoreError(str(e)) from e

    def ack(self, device):
        rows = self._query("SELECT ack FROM devices WHERE device=?", (device,))
        return rows[0][0] if rows else 0

    def readings(self, device, since=0, limit=None):
        sql = ("SELECT " + self._reading_cols + " FROM readings r"
               " WHERE r.device=? AND r.seq>? ORDER BY r.seq")
        args = [device, since]
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        return [reading_dict(r) for r in self._query(sql, args)]

    def latest(self, device, limit=20):
        rows = self._query("SELECT " + self._reading_cols + " FROM readings r"
                           " WHERE r.device=? ORDER BY r.seq DESC LIMIT ?",
                           (device, int(limit)))
        return [reading_dict(r) for r in rows]

    def gaps(self, device):
        reason = "reason" if self._reading_cols is _READING_COLS else "NULL"
        rows = self._query("SELECT seq_from, seq_to, why, received, %s FROM gaps WHERE device=?"
                           " ORDER BY seq_from, seq_to" % reason, (device,))
        out = []
        for a, b, w, t, why in rows:
            g = {"from": a, "to": b, "why": w, "received": t}
            if why is not None:
                g["reason"] = why
            out.append(g)
        return out

    _has_dropped = True   # devices.dropped exists (a read-only store may find it missing)

    def dropped(self, device):
        if self._has_dropped:
            rows = self._query("SELECT dropped FROM devices WHERE device=?", (device,))
            return rows[0][0] if rows else 0
        return self._query("SELECT COALESCE(SUM(seq_to-seq_from+1),0) FROM gaps"
                           " WHERE device=? AND why='dropped'", (device,))[0][0]

    def epochs(self, device):
        if self._reading_cols is not _READING_COLS:
            return []
        rows = self._query("SELECT epoch, seq_offset, started_at, previous FROM epochs"
                           " WHERE device=? ORDER BY started_at, rowid", (device,))
        return epoch_dicts(rows)

    def devices(self):
        rows = self._query(
            "SELECT d.device, d.ack, d.readings, d.last_seq, d.first_seen, d.last_seen,"
            " d.hello, d.health, d.health_at, %s,"
            " %s,"
            " (SELECT COUNT(*) FROM gaps g WHERE g.device=d.device)"
            " FROM devices d ORDER BY d.device" % (
                "d.epoch, d.epoch_offset" if self._reading_cols is _READING_COLS else "'', 0",
                "d.dropped" if self._has_dropped else
                "(SELECT COALESCE(SUM(seq_to-seq_from+1),0) FROM gaps g"
                " WHERE g.device=d.device AND g.why='dropped')"))
        out = []
        for (dev, ack, n, last, first_seen, last_seen, hello, health, health_at, epoch, offset,
             dropped, ngaps) in rows:
            out.append({"device": dev, "ack": ack, "readings": n, "last_seq": last,
                        "first_seen": first_seen, "last_seen": last_seen,
                        "hello": json.loads(hello) if hello else None,
                        "health": json.loads(health) if health else None,
                        "health_at": health_at, "dropped_gaps": dropped, "gaps": ngaps,
                        "epoch": epoch, "epoch_offset": offset})
        return out

    def health_series(self, device, key, start, end, buckets):
        if key not in HEALTH_SERIES:
            raise ValueError("not a health series: %r" % (key,))
        start, width, buckets = bucket_plan(start, end, buckets)
        rows = self._query(
            "SELECT b, MIN(x), AVG(x), MAX(x), COUNT(*) FROM (SELECT"
            " CAST((received - :s) / :w AS INTEGER) AS b, CASE WHEN json_type(body, :k)"
            " IN ('integer', 'real') THEN json_extract(body, :k) END AS x FROM health"
            " WHERE device=:d AND received >= :s AND received < :e) WHERE x IS NOT NULL"
            " GROUP BY b ORDER BY b",
            {"s": start, "w": width, "k": "$." + key, "d": device, "e": float(end)})
        return bucket_rows(rows, start, width, buckets)

    def close(self):
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


def epoch_dicts(rows):
    """epochs()' rows (epoch, seq_offset, started_at, previous) -> dicts."""
    return [{"epoch": e, "offset": o, "started_at": t, "previous": p} for e, o, t, p in rows]


def ota_dicts(rows):
    """ota_history's rows (newest first, as queried) -> dicts, oldest first."""
    return [dict(zip(("offer", "version", "state", "reason", "at"), r)) for r in reversed(rows)]

def set_desired_in(run, device, output, change, who, now):
    """Store.set_desired inside a transaction: `run(sql, args) -> rows`, `?` placeholders."""
    row = run("SELECT ver, body FROM outputs_desired WHERE device=? AND output=?",
              (device, output))
    ver, before = (row[0][0], json.loads(row[0][1])) if row else (0, None)
    body = merge_desired(before, change)
    text = json.dumps(body, allow_nan=False)
    ver += 1
    run("INSERT INTO outputs_desired (device, output, ver, body, set_by, set_at)"
        " VALUES (?,?,?,?,?,?) ON CONFLICT (device, output) DO UPDATE SET"
        " ver=excluded.ver, body=excluded.body, set_by=excluded.set_by,"
        " set_at=excluded.set_at RETURNING ver", (device, output, ver, text, who, now))
    run('INSERT INTO outputs_audit (device, output, at, who, ver, "from", "to")'
        " VALUES (?,?,?,?,?,?,?) RETURNING ver",
        (device, output, now, who, ver, row[0][1] if row else None, text))
    return desired_record(output, ver, body, who, now)


def record_reported_in(run, device, out, now, encode=lambda v: v, value="?"):
    """Store.record_reported inside a transaction (see set_desired_in); `encode` and `value`
    (its placeholder) say how the store takes a value."""
    kept = {}
    for name, r in out.items():
        # the WHERE of the upsert: a lower ver than the stored one changes nothing
        got = run("INSERT INTO outputs_reported AS o (device, output, ver, v, why, err, at)"
                  " VALUES (?,?,?," + value + ",?,?,?) ON CONFLICT (device, output) DO UPDATE"
                  " SET ver=excluded.ver, v=excluded.v, why=excluded.why, err=excluded.err,"
                  " at=excluded.at WHERE excluded.ver >= o.ver RETURNING ver",
                  (device, name, r["ver"], encode(r.get("v")), r["why"], r.get("err"), now))
        if got:
            kept[name] = reported_row(r["ver"], r.get("v"), r["why"], r.get("err"), now)
    return kept


def merge_desired(before, change):
    """The desired body after `change` ({"v"} and/or {"rule"}; rule None removes it)."""
    body = dict(before or {})
    for k, x in change.items():
        if k == "rule" and x is None:
            body.pop("rule", None)
        else:
            body[k] = x
    return body


def desired_record(output, ver, body, who, at):
    rec = {"out": output, "ver": ver, "v": body.get("v"), "set_by": who, "set_at": at}
    if body.get("rule") is not None:
        rec["rule"] = body["rule"]
    return rec


def reported_row(ver, v, why, err, at):
    row = {"ver": ver, "v": v, "why": why, "at": at}
    if err is not None:
        row["err"] = err
    return row


def audit_row(output, at, who, ver, before, after):
    return {"out": output, "at": at, "who": who, "ver": ver,
            "from": json.loads(before) if before else None, "to": json.loads(after)}


def bucket_plan(start, end, buckets):
    """(start, width, buckets) of a history query: 1..MAX_BUCKETS buckets over end - start."""
    start, end = float(start), float(end)
    buckets = max(1, min(int(buckets), MAX_BUCKETS))
    if not end > start:
        raise ValueError("history: end must be after start")
    return start, (end - start) / buckets, buckets


def bucket_rows(rows, start, width, buckets):
    out = []
    for b, lo, avg, hi, n in rows:
        b = int(b)
        if 0 <= b < buckets:       # a float rounding at the far edge stays out
            out.append([start + b * width, _num(lo), float(avg), _num(hi), int(n)])
    return out


def _num(x):
    # PostgreSQL's NUMERIC comes back as Decimal
    if x is None or isinstance(x, (int, float)):
        return x
    return float(x) if x.as_tuple().exponent < 0 else int(x)


def reading_dict(row):
    seq, boot, ts, up, name, value, unit, err, received, epoch, dseq = row
    d = {"q": seq, "boot": boot, "ts": ts, "up": up, "n": name, "v": value, "u": unit,
         "received": received, "epoch": epoch, "dq": dseq}
    if err is not None:
        d["e"] = err
    return d


def open_readonly(path):
    """A reader on a database another process writes (tests, tools): only the read methods
    work. Safe beside a running collector (WAL readers do not block the writer)."""
    return ReadOnlySQLiteStore(path)


class ReadOnlySQLiteStore(SQLiteStore):
    """Opens the database read-only (URI mode=ro)."""

    def __init__(self, path):  # deliberately not super().__init__: no schema writes
        self.path = str(path)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect("file:%s?mode=ro" % self.path, uri=True,
                                       isolation_level=None, check_same_thread=False,
                                       timeout=30)
            self._db.execute("SELECT 1 FROM devices LIMIT 1")
            if "epoch" not in _columns(self._db, "readings"):
                self._reading_cols = _READING_COLS_V1   # not migrated yet: no epochs
            self._has_dropped = "dropped" in _columns(self._db, "devices")
        except sqlite3.Error as e:
            raise StoreError("cannot open %s read-only: %s" % (self.path, e)) from e

    def apply(self, ops):
        raise StoreError("read-only store")
