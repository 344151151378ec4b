"""SQLiteStore: the work of one message is bounded by that message, not by the device's
history. Measured in SQLite VM steps (a progress handler called on every instruction), which
count the rows a statement touches: never time."""
import pytest

from collector_fixtures import readings
from fieldlink_tools.collector.store import _BACKFILL, SQLiteStore


class Steps:
    """Counts the SQLite VM instructions run while active (a proxy for rows touched)."""

    def __init__(self, store):
        self.db = store._db
        self.n = 0

    def _tick(self):
        self.n += 1
        return 0

    def __enter__(self):
        self.db.set_progress_handler(self._tick, 1)
        return self

    def __exit__(self, *exc):
        self.db.set_progress_handler(None, 1)


def store_with_gaps(path, ngaps, why="dropped"):
    """Device d: seq 1 missing (ack stays 0), then `ngaps` one-seq gaps above it, every other
    seq from 1000 up, and the readings between them: the shape of the finding (60k gaps above
    a missing seq made every batch scan them all)."""
    s = SQLiteStore(path)
    s.add_readings("d", readings([2]))
    with s._lock:
        db = s._db
        db.execute("BEGIN")
        db.executemany("INSERT INTO gaps (device, seq_from, seq_to, why, received)"
                       " VALUES ('d',?,?,?,0)", ((q, q, why) for q in
                                                  range(1000, 1000 + 2 * ngaps, 2)))
        db.execute("COMMIT")
    return s


def cost(s, fn):
    with Steps(s) as c:
        fn()
    return c.n


@pytest.mark.parametrize("op", ["batch", "gap_low", "gap_high", "rejected"])
def test_message_cost_does_not_grow_with_the_gaps_above_the_ack(tmp_path, op):
    def message(s, k):
        # a different, new seq range each time so that nothing is a resend
        if op == "batch":
            return s.add_readings("d", readings(range(200 + 10 * k, 210 + 10 * k)))
        if op == "gap_low":
            return s.add_gap("d", 300 + 10 * k, 305 + 10 * k, "dropped")
        if op == "gap_high":
            top = 10 ** 6 + 10 * k
            return s.add_gap("d", top, top + 5, "dropped")
        return s.add_readings("d", [], rejected=[(500 + k, "bad value")])

    small = store_with_gaps(tmp_path / "small.db", 10)
    big = store_with_gaps(tmp_path / "big.db", 20000)
    try:
        c_small = [cost(small, lambda: message(small, k)) for k in range(3)]
        c_big = [cost(big, lambda: message(big, k)) for k in range(3)]
        assert small.ack("d") == big.ack("d") == 0      # the missing seq still holds it
    finally:
        small.close()
        big.close()
    # 20,000 gaps vs 10: the same order of work (a B-tree descent is a few steps deeper);
    # a scan of the gaps would be >= 20,000 steps per message
    assert max(c_big) < 2 * max(c_small) + 500, (c_small, c_big)


def test_filling_the_hole_passes_each_gap_once(tmp_path):
    s = store_with_gaps(tmp_path / "s.db", 5000)
    try:
        # fill everything between the gaps except seq 1: still not contiguous
        s.add_readings("d", readings([q for q in range(3, 1000)]))
        s.add_readings("d", readings(range(1001, 1000 + 2 * 5000, 2)))
        assert s.ack("d") == 0
        with Steps(s) as one:
            assert s.add_readings("d", readings([1]))[0] == 1000 + 2 * 5000 - 1
        # the mark passes ~10,000 seqs and 5,000 gaps once; afterwards a batch is cheap again
        with Steps(s) as after:
            s.add_readings("d", readings([1000 + 2 * 5000]))
        assert after.n < 2000, after.n
        assert one.n < 200 * 15000, one.n
    finally:
        s.close()


def test_the_dropped_count_is_read_not_summed(tmp_path):
    # the server asks for it after every gap `dropped`; it used to sum all the device's gaps
    small = store_with_gaps(tmp_path / "small.db", 10)
    big = store_with_gaps(tmp_path / "big.db", 20000)
    try:
        for s in (small, big):       # the rows above went in behind the store's back
            with s._lock:
                s._db.execute(_BACKFILL["devices", "dropped"])
        assert small.dropped("d") == 10 and big.dropped("d") == 20000
        c_small, c_big = cost(small, lambda: small.dropped("d")), cost(
            big, lambda: big.dropped("d"))
        assert c_big < 2 * c_small + 100, (c_small, c_big)
        big.add_gap("d", 10 ** 7, 10 ** 7 + 9, "dropped")
        big.add_gap("d", 10 ** 7 + 5, 10 ** 7 + 14, "dropped")   # resent wider: +5 only
        assert big.dropped("d") == 20015
    finally:
        small.close()
        big.close()


def test_an_older_database_gets_its_dropped_count(tmp_path):
    s = SQLiteStore(tmp_path / "s.db")
    s.add_gap("d", 3, 5, "dropped")
    s.add_gap("d", 4, 9, "dropped")
    s.add_gap("d", 20, 20, "reboot")
    with s._lock:
        s._db.execute("ALTER TABLE devices DROP COLUMN dropped")   # as an older collector
    s.close()
    s = SQLiteStore(tmp_path / "s.db")
    assert s.dropped("d") == 7 and s.devices()[0]["dropped_gaps"] == 7
    s.close()
