"""Device epochs and rejected readings (docs/protocol.md "Epochs", "Rejected readings"), played
by the fake device against `fieldlink server` as a process: a reflashed device's new seqs are
stored (not dropped as duplicates), across collector restarts; a bad reading inside a good batch
costs that reading only (on every store: `collector_db`); an old SQLite database gains the new
columns."""
import sqlite3

from collector_fixtures import readings
from fieldlink_tools.collector.store import SQLiteStore, open_readonly

DEVS = {"dev-1": "tok-1"}


def rows(c, dev="dev-1"):
    st = c.store()
    try:
        return st.readings(dev), st.gaps(dev), st.epochs(dev), st.ack(dev)
    finally:
        st.close()


def test_reflashed_device_starts_a_new_epoch_and_nothing_is_dropped(collector_proc,
                                                                    fake_device, collector_db):
    c = collector_proc(DEVS, db_path=collector_db)
    d = fake_device(c.url, "dev-1", "tok-1")
    assert d.hello(next=1, epoch="a1") == 0
    for a in range(1, 51, 10):
        assert d.batch(range(a, a + 10)) == a + 9
    d.close()
    before, _, _, _ = rows(c)
    c.restart()     # the offset is in the database, not in the process

    # `fieldlink flash` wiped the board: new epoch, numbering from 1 again.
    d = fake_device(c.url, "dev-1", "tok-1")
    assert d.hello(next=1, epoch="b2") == 0            # acks are in the device's numbering
    assert d.batch(range(1, 11), value=lambda q: -q) == 10
    d.close()
    c.restart()
    d = fake_device(c.url, "dev-1", "tok-1")
    assert d.hello(next=16, first=11, held=5, epoch="b2") == 10
    assert d.batch(range(11, 16), value=lambda q: -q) == 15
    d.close()

    got, gaps, epochs, ack = rows(c)
    assert [r["q"] for r in got] == list(range(1, 66))           # one growing seq space
    assert got[:50] == before                                    # the old rows untouched
    assert all(r["epoch"] == "a1" for r in got[:50])
    new = got[50:]
    assert [(r["epoch"], r["dq"], r["v"]) for r in new] == [("b2", q, -q) for q in range(1, 16)]
    assert gaps == [] and ack == 65                              # the old epoch was complete
    assert [(e["epoch"], e["offset"], e["previous"]) for e in epochs] == [
        ("a1", 0, ""), ("b2", 50, "a1")]
    assert "dev-1: new epoch b2 (was a1)" in c.log() and " INFO " in c.log()


def test_same_epoch_reconnect_changes_nothing(collector_proc, fake_device, collector_db):
    c = collector_proc(DEVS, db_path=collector_db)
    d = fake_device(c.url, "dev-1", "tok-1")
    assert d.hello(epoch="0f") == 0
    assert d.batch([1, 2, 3]) == 3
    d.close()
    c.restart()
    d = fake_device(c.url, "dev-1", "tok-1")
    assert d.hello(next=4, epoch="0f") == 3
    assert d.batch([3, 4]) == 4                                 # a resend stays a resend
    d.close()
    got, gaps, epochs, _ = rows(c)
    assert [(r["q"], r["dq"], r["epoch"]) for r in got] == [(q, q, "0f") for q in (1, 2, 3, 4)]
    assert [e["epoch"] for e in epochs] == ["0f"] and gaps == []
    assert "new epoch" not in c.log()


def test_new_epoch_closes_what_the_old_one_left_open(collector_proc, fake_device, collector_db):
    c = collector_proc(DEVS, db_path=collector_db)
    d = fake_device(c.url, "dev-1", "tok-1")
    assert d.hello(epoch="a") == 0
    assert d.batch([1, 2, 3, 6, 7]) == 3                        # 4, 5 never came
    d.close()
    d = fake_device(c.url, "dev-1", "tok-1")
    assert d.hello(epoch="b") == 0                              # wiped: 4..7 are gone
    assert d.batch([1]) == 1
    d.close()
    got, gaps, _, ack = rows(c)
    assert [(g["from"], g["to"], g["why"]) for g in gaps] == [(4, 7, "lost")]
    assert "epoch b replaced a" in gaps[0]["reason"]
    assert [r["q"] for r in got] == [1, 2, 3, 6, 7, 8] and ack == 8


def test_device_without_epoch_keeps_todays_numbering(collector_proc, fake_device, collector_db):
    c = collector_proc(DEVS, db_path=collector_db)
    d = fake_device(c.url, "dev-1", "tok-1")
    assert d.hello() == 0
    assert d.batch([1, 2]) == 2
    d.close()
    d = fake_device(c.url, "dev-1", "tok-1")
    assert d.hello(next=3, epoch="c0ffee") == 2                 # updated firmware: adopted
    assert d.batch([3]) == 3
    d.close()
    d = fake_device(c.url, "dev-1", "tok-1")
    assert d.hello(next=4) == 3                                 # hello without epoch again
    assert d.batch([4]) == 4
    d.close()
    got, _, epochs, _ = rows(c)
    assert [(r["q"], r["dq"], r["epoch"]) for r in got] == [
        (1, 1, ""), (2, 2, ""), (3, 3, "c0ffee"), (4, 4, "c0ffee")]
    assert [(e["epoch"], e["offset"]) for e in epochs] == [("c0ffee", 0)]


def test_pre_epoch_device_wiped_into_epoch_firmware_is_offset(collector_proc, fake_device,
                                                              collector_db):
    # No epoch stored, but the counter is back below the ack: that is a wipe, not an upgrade.
    c = collector_proc(DEVS, db_path=collector_db)
    d = fake_device(c.url, "dev-1", "tok-1")
    assert d.hello() == 0
    assert d.batch(range(1, 6)) == 5
    d.close()
    d = fake_device(c.url, "dev-1", "tok-1")
    assert d.hello(next=1, epoch="1d") == 0
    assert d.batch([1, 2]) == 2
    d.close()
    got, _, epochs, _ = rows(c)
    assert [(r["q"], r["dq"]) for r in got][5:] == [(6, 1), (7, 2)]
    assert [(e["epoch"], e["offset"], e["previous"]) for e in epochs] == [("1d", 5, "")]


def test_a_bad_reading_is_rejected_alone_and_the_connection_stays(collector_proc, fake_device,
                                                                  collector_db):
    c = collector_proc(DEVS, db_path=collector_db)
    d = fake_device(c.url, "dev-1", "tok-1")
    assert d.hello(epoch="e1") == 0
    assert d.batch([1, 2]) == 2
    d.close()
    d = fake_device(c.url, "dev-1", "tok-1")
    assert d.hello(epoch="e2") == 0                            # offset 2: seqs are translated
    rs = readings([1, 2, 3, 4])
    rs[1]["v"] = "hot"
    rs[2]["n"] = "x" * 65
    d.send({"t": "batch", "r": rs})
    err = d.expect("error")
    assert err["code"] == "rejected" and err["seqs"] == [2, 3]
    assert "v must be a number" in err["msg"] and "n must be a string" in err["msg"]
    assert d.expect("ack")["ack"] == 4                          # past the rejected ones
    assert d.batch([5]) == 5                                    # same connection, still open
    d.send({"t": "batch", "r": rs})                             # resent: rejected again, acked
    assert d.expect("error")["seqs"] == [2, 3] and d.expect("ack")["ack"] == 5
    d.close()
    got, gaps, _, ack = rows(c)
    assert [(r["q"], r["dq"]) for r in got] == [(1, 1), (2, 2), (3, 1), (6, 4), (7, 5)]
    assert [(g["from"], g["to"], g["why"]) for g in gaps] == [(4, 4, "rejected"),
                                                              (5, 5, "rejected")]
    assert gaps[0]["reason"] == "reading 2: v must be a number or null" and ack == 7
    assert "WARNING" in c.log() and "rejected 2 reading(s)" in c.log()


# The schema of the collector before epochs (as committed up to 349c374).
OLD_SCHEMA = """
CREATE TABLE devices (device TEXT PRIMARY KEY, ack INTEGER NOT NULL DEFAULT 0,
    readings INTEGER NOT NULL DEFAULT 0, last_seq INTEGER NOT NULL DEFAULT 0, first_seen REAL,
    last_seen REAL, hello TEXT, health TEXT, health_at REAL);
CREATE TABLE readings (device TEXT NOT NULL, seq INTEGER NOT NULL, boot INTEGER, ts REAL,
    up INTEGER, name TEXT NOT NULL, value, unit TEXT, err TEXT, received REAL NOT NULL,
    PRIMARY KEY (device, seq)) WITHOUT ROWID;
CREATE TABLE gaps (device TEXT NOT NULL, seq_from INTEGER NOT NULL, seq_to INTEGER NOT NULL,
    why TEXT NOT NULL, received REAL NOT NULL, PRIMARY KEY (device, seq_from, seq_to, why));
CREATE INDEX gaps_by_to ON gaps (device, seq_to);
CREATE TABLE health (device TEXT NOT NULL, received REAL NOT NULL, body TEXT NOT NULL);
CREATE INDEX health_by_device ON health (device, received);
INSERT INTO devices (device, ack, readings, last_seq) VALUES ('dev-1', 4, 3, 3);
INSERT INTO readings VALUES ('dev-1', 1, 1, NULL, 0, 'env.t', 20.5, 'C', NULL, 1.0),
    ('dev-1', 2, 1, NULL, 5, 'env.t', 21, 'C', NULL, 1.0),
    ('dev-1', 3, 1, NULL, 9, 'env.t', NULL, 'C', 'crc', 1.0);
INSERT INTO gaps VALUES ('dev-1', 4, 4, 'dropped', 1.0);
"""


def test_a_database_from_before_epochs_is_migrated(tmp_path, collector_proc, fake_device):
    db = tmp_path / "old.db"
    con = sqlite3.connect(db)
    con.executescript(OLD_SCHEMA)
    con.close()
    ro = open_readonly(db)                                      # readable before migration
    assert [(r["q"], r["dq"], r["epoch"]) for r in ro.readings("dev-1")] == [
        (1, 1, ""), (2, 2, ""), (3, 3, "")]
    assert ro.gaps("dev-1")[0]["why"] == "dropped" and ro.epochs("dev-1") == []
    ro.close()

    c = collector_proc(DEVS, db_path=db)                        # migrates on open
    d = fake_device(c.url, "dev-1", "tok-1")
    assert d.hello(next=1, epoch="77") == 0                     # wiped: below the ack 4
    assert d.batch([1]) == 1
    d.close()
    got, gaps, epochs, ack = rows(c)
    assert [(r["q"], r["dq"], r["epoch"], r["v"]) for r in got] == [
        (1, 1, "", 20.5), (2, 2, "", 21), (3, 3, "", None), (5, 1, "77", 20.01)]
    assert got[2]["e"] == "crc" and ack == 5
    assert [(g["from"], g["to"], g["why"]) for g in gaps] == [(4, 4, "dropped")]
    assert [(e["epoch"], e["offset"]) for e in epochs] == [("77", 4)]
    c.stop()
    s = SQLiteStore(db)                                          # a second open: no-op
    assert s.devices()[0]["epoch"] == "77" and s.devices()[0]["epoch_offset"] == 4
    s.close()
