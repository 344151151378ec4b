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
import json
import sqlite3
import threading
import time


class StoreError(Exception):
    """The store could not do what was asked (I/O error, disk full, closed)."""


class Store:
    """What the server needs from a store. Methods are blocking; the server calls them from
    one worker thread, in order, so implementations need not be safe for concurrent use.
    Failures are raised as StoreError (the server then closes with 1011 and acks nothing)."""

    def add_readings(self, device, readings, boot=None, epoch="", rejected=()):
        """Store readings (dicts with q, ts, up, n, v, u, e; q in the store's seq space) in one
        transaction, tagged with `epoch`; each (seq, reason) in `rejected` is recorded in the
        same transaction as a one-seq gap `rejected`. Returns (ack, new): the ack after the
        commit, and the readings that were not stored before (resends are ignored), each with
        `boot`, `epoch` and `received` added."""
        raise NotImplementedError

    def add_gap(self, device, seq_from, seq_to, why, reason=None):
        """Record that seqs seq_from..seq_to (inclusive) will never arrive (`reason`: free
        text, for server-side gaps); return the new ack."""
        raise NotImplementedError

    def enter_epoch(self, device, epoch, next_seq):
        """A hello said `epoch` ("" when it had none) and `next` (device numbering).
        Returns a dict: epoch and offset to use on this connection, `started` (a new epoch
        began: offset = the highest seq stored or in a gap), `previous` (the epoch before),
        `lost` ((from, to) recorded as gap `lost` when the old epoch left a hole below the
        new offset, else None) and `ack` (the store's ack afterwards)."""
        raise NotImplementedError

    def epochs(self, device):
        """Epochs a device has announced, oldest first: dicts epoch, offset, started_at,
        previous."""
        raise NotImplementedError

    def ack(self, device):
        """The cumulative ack for a device (0 when nothing is known)."""
        raise NotImplementedError

    def record_hello(self, device, hello):
        """Remember the last `hello` of a device (firmware, board, boot, dropped, ...)."""
        raise NotImplementedError

    def record_health(self, device, health):
        """Store one `health` message."""
        raise NotImplementedError

    def record_ota(self, device, offer, version, state, reason=None):
        """Record one step of a firmware update (docs/ota.md)."""
        raise NotImplementedError

    def ota_history(self, device, limit=100):
        """A device's firmware update steps, oldest first."""
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
    epoch_offset INTEGER NOT NULL DEFAULT 0  -- store seq = device seq + this
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
"""

# Columns added since the first schema: a database created before them gets them (with their
# defaults) when a SQLiteStore opens it.
_ADDED_COLUMNS = (
    ("devices", "epoch", "TEXT NOT NULL DEFAULT ''"),
    ("devices", "epoch_offset", "INTEGER NOT NULL DEFAULT 0"),
    ("readings", "epoch", "TEXT NOT NULL DEFAULT ''"),
    ("gaps", "reason", "TEXT"),
)

# A reading row as the read methods return it; dq is the device's own number for the seq:
# minus the offset of the latest start of its epoch below it (0 before any epoch).
_READING_COLS = (
    "r.seq, r.boot, r.ts, r.up, r.name, r.value, r.unit, r.err, r.received, r.epoch,"
    " r.seq - COALESCE((SELECT MAX(e.seq_offset) FROM epochs e WHERE e.device=r.device"
    " AND e.epoch=r.epoch AND e.seq_offset<r.seq), 0)")
# The same from a database a SQLiteStore has not opened since the epochs came (read-only).
_READING_COLS_V1 = ("r.seq, r.boot, r.ts, r.up, r.name, r.value, r.unit, r.err, r.received,"
                    " '', r.seq")


def _columns(db, table):
    return {row[1] for row in db.execute("PRAGMA table_info(%s)" % table)}


DEFAULT_KEEP_HEALTH = 10080  # a week of health messages at the firmware's default 60 s


class SQLiteStore(Store):
    """SQLite in WAL mode; one transaction per batch; the ack is kept in `devices.ack` and
    advanced inside the same transaction that stores the batch, so it is never rescanned."""

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
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                       timeout=30)
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
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    # -- writing -------------------------------------------------------------------------

    def _tx(self, fn):
        """Run fn(db) in one IMMEDIATE transaction; commit, or roll back and raise."""
        with self._lock:
            if self._db is None:
                raise StoreError("store is closed")
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    out = fn(self._db)
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
                return out
            except sqlite3.Error as e:
                raise StoreError(str(e)) from e

    @staticmethod
    def _ensure_device(db, device, now):
        db.execute("INSERT OR IGNORE INTO devices (device, first_seen, last_seen) VALUES (?,?,?)",
                   (device, now, now))
        db.execute("UPDATE devices SET last_seen=? WHERE device=?", (now, device))
        return db.execute("SELECT ack FROM devices WHERE device=?", (device,)).fetchone()[0]

    @staticmethod
    def _advance(db, device, ack):
        """Move the contiguous high-water mark up as far as stored readings and gaps allow.
        Only rows above the mark are looked at (readings not yet contiguous, gaps reaching
        past the mark), so the cost is that of the new data, not of the history."""
        while True:
            # A gap covering ack+1 moves the mark to its end (several may chain).
            row = db.execute(
                "SELECT MAX(seq_to) FROM gaps WHERE device=? AND seq_to>? AND seq_from<=?",
                (device, ack, ack + 1)).fetchone()
            if row[0] is not None:
                ack = row[0]
                continue
            # A stored run starting at ack+1 ends at the first stored seq without a successor.
            if db.execute("SELECT 1 FROM readings WHERE device=? AND seq=?",
                          (device, ack + 1)).fetchone() is None:
                return ack
            ack = db.execute(
                "SELECT MIN(r.seq) FROM readings r WHERE r.device=? AND r.seq>? AND NOT EXISTS"
                " (SELECT 1 FROM readings s WHERE s.device=r.device AND s.seq=r.seq+1)",
                (device, ack)).fetchone()[0]

    def add_readings(self, device, readings, boot=None, epoch="", rejected=()):
        now = time.time()

        def tx(db):
            ack = self._ensure_device(db, device, now)
            for seq, reason in rejected:
                self._insert_gap(db, device, seq, seq, "rejected", reason, now)
            new = []
            for r in readings:
                # PRIMARY KEY (device, seq) + ON CONFLICT DO NOTHING: a resent reading
                # changes nothing (unlike INSERT OR IGNORE, other constraint failures still
                # raise and roll the batch back); rowcount tells which ones are new.
                cur = db.execute(
                    "INSERT INTO readings (device, seq, boot, ts, up, name, value, unit, err,"
                    " received, epoch) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
                    " ON CONFLICT (device, seq) DO NOTHING",
                    (device, r["q"], boot, r.get("ts"), r.get("up"), r["n"], r.get("v"),
                     r.get("u"), r.get("e"), now, epoch or ""))
                if cur.rowcount == 1:
                    new.append(r)
            new_ack = self._advance(db, device, ack)
            if new:
                top = max(r["q"] for r in new)
                db.execute("UPDATE devices SET readings=readings+?, last_seq=MAX(last_seq,?),"
                           " ack=? WHERE device=?", (len(new), top, new_ack, device))
            elif new_ack != ack:
                db.execute("UPDATE devices SET ack=? WHERE device=?", (new_ack, device))
            return new_ack, [dict(r, boot=boot, epoch=epoch or "", received=now) for r in new]
        return self._tx(tx)

    @staticmethod
    def _insert_gap(db, device, seq_from, seq_to, why, reason, now):
        # Only the seqs no gap of this kind covers yet: a device sends its pending gaps again
        # on every connection, merged with newer drops next to them (Outbox.on_connect), so
        # over a flaky link the same seqs came back in wider and wider gaps, one row each,
        # and the dropped count summed them all (50 reconnects: 5640 for 235 dropped).
        lo = seq_from
        for a, b in db.execute(
                "SELECT seq_from, seq_to FROM gaps WHERE device=? AND seq_to>=? AND"
                " seq_from<=? AND why=? ORDER BY seq_from",
                (device, seq_from, seq_to, why)).fetchall():
            if a > lo:
                db.execute("INSERT INTO gaps (device, seq_from, seq_to, why, received, reason)"
                           " VALUES (?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                           (device, lo, a - 1, why, now, reason))
            if b + 1 > lo:
                lo = b + 1
        if lo <= seq_to:
            db.execute("INSERT INTO gaps (device, seq_from, seq_to, why, received, reason)"
                       " VALUES (?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                       (device, lo, seq_to, why, now, reason))

    def add_gap(self, device, seq_from, seq_to, why, reason=None):
        now = time.time()

        def tx(db):
            ack = self._ensure_device(db, device, now)
            self._insert_gap(db, device, seq_from, seq_to, why, reason, now)
            new_ack = self._advance(db, device, ack)
            if new_ack != ack:
                db.execute("UPDATE devices SET ack=? WHERE device=?", (new_ack, device))
            return new_ack
        return self._tx(tx)

    def enter_epoch(self, device, epoch, next_seq):
        now = time.time()

        def tx(db):
            ack = self._ensure_device(db, device, now)
            cur, offset, last_seq = db.execute(
                "SELECT epoch, epoch_offset, last_seq FROM devices WHERE device=?",
                (device,)).fetchone()
            out = {"epoch": cur, "offset": offset, "started": False, "previous": cur,
                   "lost": None, "ack": ack}
            if not epoch or epoch == cur:
                return out   # no epoch (older firmware: numbering as before) or the same one
            out["epoch"] = epoch
            if not cur and next_seq + offset > ack:
                # The first epoch this device announces (new device, or firmware that now
                # sends one and keeps numbering where it was): adopt it, same numbers.
                db.execute("INSERT INTO epochs (device, epoch, seq_offset, started_at,"
                           " previous) VALUES (?,?,?,?,?)", (device, epoch, offset, now, cur))
                db.execute("UPDATE devices SET epoch=? WHERE device=?", (epoch, device))
                return out
            # A new epoch (its persistent state was wiped; or, from "", a device whose
            # counter went back below the ack): its numbers start over above everything
            # this device has stored or declared so far.
            top = db.execute("SELECT MAX(seq_to) FROM gaps WHERE device=?",
                             (device,)).fetchone()[0] or 0
            top = max(top, ack, last_seq)
            db.execute("INSERT INTO epochs (device, epoch, seq_offset, started_at, previous)"
                       " VALUES (?,?,?,?,?)", (device, epoch, top, now, cur))
            db.execute("UPDATE devices SET epoch=?, epoch_offset=? WHERE device=?",
                       (epoch, top, device))
            out.update(offset=top, started=True)
            if ack < top:
                # What the old epoch never delivered went with the wipe; without this gap the
                # ack could never pass it and the new epoch would stall behind it.
                self._insert_gap(db, device, ack + 1, top, "lost",
                                 "epoch %s replaced %s" % (epoch, cur or '""'), now)
                out["ack"] = self._advance(db, device, ack)
                db.execute("UPDATE devices SET ack=? WHERE device=?", (out["ack"], device))
                out["lost"] = (ack + 1, top)
            return out
        return self._tx(tx)

    def record_ota(self, device, offer, version, state, reason=None):
        """One step of a firmware update (collector/ota.py) into table `ota`."""
        def tx(db):
            db.execute("INSERT INTO ota (device, offer, version, state, reason, at)"
                       " VALUES (?,?,?,?,?,?)", (device, offer, version, state, reason,
                                                 time.time()))
        self._tx(tx)

    def ota_history(self, device, limit=100):
        """The device's update steps, oldest first: dicts of offer, version, state, reason,
        at."""
        rows = self._query("SELECT offer, version, state, reason, at FROM ota WHERE device=?"
                           " ORDER BY rowid DESC LIMIT ?", (device, int(limit)))
        return ota_dicts(rows)

    def probe(self):
        """A real, committed write, so /healthz sees a read-only, immutable or broken
        database as the devices would."""
        def tx(db):
            db.execute("CREATE TABLE IF NOT EXISTS probe (id INTEGER PRIMARY KEY, at REAL)")
            db.execute("INSERT OR REPLACE INTO probe (id, at) VALUES (1, ?)", (time.time(),))
        self._tx(tx)

    def record_hello(self, device, hello):
        now = time.time()

        def tx(db):
            self._ensure_device(db, device, now)
            db.execute("UPDATE devices SET hello=? WHERE device=?", (json.dumps(hello), device))
        self._tx(tx)

    def record_health(self, device, health):
        now = time.time()
        body = json.dumps(health)

        def tx(db):
            self._ensure_device(db, device, now)
            db.execute("INSERT INTO health (device, received, body) VALUES (?,?,?)",
                       (device, now, body))
            if self.keep_health:
                db.execute("DELETE FROM health WHERE device=? AND rowid <= (SELECT rowid FROM"
                           " health WHERE device=? ORDER BY rowid DESC LIMIT 1 OFFSET ?)",
                           (device, device, self.keep_health))
            db.execute("UPDATE devices SET health=?, health_at=? WHERE device=?",
                       (body, now, device))
        self._tx(tx)

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

    def dropped(self, device):
        return self._query("SELECT COALESCE(SUM(seq_to-seq_from+1),0) FROM gaps"
                           " WHERE device=? AND why='dropped'", (device,))[0][0]

    def epochs(self, device):
        if self._reading_cols is not _READING_COLS:
            return []
        rows = self._query("SELECT epoch, seq_offset, started_at, previous FROM epochs"
                           " WHERE device=? ORDER BY started_at, rowid", (device,))
        return [{"epoch": e, "offset": o, "started_at": t, "previous": p}
                for e, o, t, p in rows]

    def health_history(self, device, limit=100):
        rows = self._query("SELECT received, body FROM health WHERE device=?"
                           " ORDER BY received DESC LIMIT ?", (device, int(limit)))
        return [dict(json.loads(b), received=t) for t, b in rows]

    def devices(self):
        rows = self._query(
            "SELECT d.device, d.ack, d.readings, d.last_seq, d.first_seen, d.last_seen,"
            " d.hello, d.health, d.health_at, %s,"
            " (SELECT COALESCE(SUM(seq_to-seq_from+1),0) FROM gaps g"
            "   WHERE g.device=d.device AND g.why='dropped'),"
            " (SELECT COUNT(*) FROM gaps g WHERE g.device=d.device)"
            " FROM devices d ORDER BY d.device" % (
                "d.epoch, d.epoch_offset" if self._reading_cols is _READING_COLS else "'', 0"))
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

    def close(self):
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


def ota_dicts(rows):
    """ota_history's rows (newest first, as queried) -> dicts, oldest first."""
    return [dict(zip(("offer", "version", "state", "reason", "at"), r)) for r in reversed(rows)]


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
        except sqlite3.Error as e:
            raise StoreError("cannot open %s read-only: %s" % (self.path, e)) from e

    def _tx(self, fn):
        raise StoreError("read-only store")
