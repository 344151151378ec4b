"""Store.apply: many devices' writes in one transaction (one durable commit), each op in its
own savepoint: one op failing on its data rolls back alone, a failure of the transaction
stores (and so acks) nothing."""
import sqlite3

import pytest

from collector_fixtures import readings
from fieldlink_tools.collector.store import SQLiteStore, StoreDataError, StoreError


def statements(store):
    seen = []
    store._db.set_trace_callback(seen.append)
    return seen


def test_a_group_is_one_transaction_and_returns_what_the_single_methods_do(tmp_path):
    s = SQLiteStore(tmp_path / "s.db")
    seen = statements(s)
    out = s.apply([
        ("record_hello", ("a", {"fw": "1"})),
        ("enter_epoch", ("a", "e1", 1)),
        ("add_readings", ("a", readings([1, 2]), 3, "e1", ())),
        ("add_readings", ("b", readings([1, 3]), None, "", ((2, "bad"),))),
        ("add_gap", ("a", 3, 4, "dropped")),
        ("record_health", ("b", {"heap_free": 5})),
        ("add_readings", ("a", readings([2, 5]), 3, "e1", ())),
    ])
    s._db.set_trace_callback(None)
    assert [x for x in seen if x in ("BEGIN IMMEDIATE", "COMMIT")] == ["BEGIN IMMEDIATE",
                                                                      "COMMIT"]
    hello, ep, ra, rb, gap, health, ra2 = out
    assert hello is None and health is None
    assert ep["epoch"] == "e1" and ep["started"] is False and ep["ack"] == 0
    assert ra[0] == 2 and [r["q"] for r in ra[1]] == [1, 2] and ra[1][0]["boot"] == 3
    assert rb[0] == 3 and [r["q"] for r in rb[1]] == [1, 3]
    assert gap == 4
    assert ra2[0] == 5 and [r["q"] for r in ra2[1]] == [5]       # 2 was stored above
    assert s.ack("a") == 5 and s.ack("b") == 3
    assert s.gaps("b")[0]["why"] == "rejected"
    s.close()
    # the same against the single methods, one transaction each
    t = SQLiteStore(tmp_path / "t.db")
    t.record_hello("a", {"fw": "1"})
    assert t.enter_epoch("a", "e1", 1) == ep
    assert t.add_readings("a", readings([1, 2]), 3, "e1")[0] == 2
    assert t.add_readings("b", readings([1, 3]), None, "", [(2, "bad")])[0] == 3
    assert t.add_gap("a", 3, 4, "dropped") == 4
    assert t.add_readings("a", readings([2, 5]), 3, "e1")[0] == 5
    t.close()


def test_one_bad_op_rolls_back_alone(tmp_path):
    s = SQLiteStore(tmp_path / "s.db")
    bad = readings([1, 2])
    bad[1]["v"] = 2 ** 70             # no SQLite integer holds it
    surrogate = readings([1])
    surrogate[0]["n"] = "env.\udcff"  # a lone surrogate: not encodable as UTF-8
    out = s.apply([
        ("add_readings", ("good", readings([1]), None, "", ())),
        ("add_readings", ("bad", bad, None, "", ())),
        ("add_readings", ("worse", surrogate, None, "", ())),
        ("add_readings", ("good", readings([2]), None, "", ())),
    ])
    assert out[0][0] == 1 and out[3][0] == 2
    assert isinstance(out[1], StoreDataError) and isinstance(out[2], StoreDataError)
    assert isinstance(out[1], StoreError)          # what callers already catch
    # nothing of a failed op stays, not even its first reading or its device row
    assert s.readings("bad") == [] and s.readings("worse") == []
    assert [d["device"] for d in s.devices()] == ["good"]
    assert [r["q"] for r in s.readings("good")] == [1, 2]
    # the single method raises what the group would have held
    with pytest.raises(StoreDataError):
        s.add_readings("bad", bad)
    assert s.readings("bad") == []
    s.close()


class BrokenDisk(SQLiteStore):
    """Raises what SQLite raises for an I/O error, in the middle of a group."""

    def _op_record_health(self, db, now, device, health):
        raise sqlite3.OperationalError("disk I/O error (injected)")


def test_a_failing_transaction_stores_nothing_of_the_group(tmp_path):
    s = BrokenDisk(tmp_path / "s.db")
    s.add_readings("a", readings([1]))
    with pytest.raises(StoreError) as e:
        s.apply([("add_readings", ("a", readings([2]), None, "", ())),
                 ("add_gap", ("b", 1, 5, "dropped")),
                 ("record_health", ("a", {"x": 1})),
                 ("add_readings", ("c", readings([1]), None, "", ()))])
    assert not isinstance(e.value, StoreDataError)
    assert s.ack("a") == 1 and s.ack("b") == 0 and s.ack("c") == 0
    assert [d["device"] for d in s.devices()] == ["a"]
    # and the store works on afterwards
    assert s.apply([("add_readings", ("a", readings([2]), None, "", ()))])[0][0] == 2
    s.close()


def test_unknown_op_and_closed_store(tmp_path):
    s = SQLiteStore(tmp_path / "s.db")
    with pytest.raises(ValueError):
        s.apply([("readings", ("a",))])
    assert s.apply([]) == []
    s.close()
    with pytest.raises(StoreError):
        s.apply([("record_hello", ("a", {}))])


class OneByOne(SQLiteStore):
    """The reference: every op on its own (the savepoint path), no bulk statements."""

    def _run_bulk(self, db, now, ops):
        return self._run_ops(db, now, ops, True)


def test_bulk_batches_give_what_one_op_at_a_time_gives(tmp_path):
    import random
    rng = random.Random(12)
    bulk, ref = SQLiteStore(tmp_path / "b.db"), OneByOne(tmp_path / "r.db")
    devs = ["d%d" % i for i in range(8)]
    for _ in range(60):
        ops = []
        for _ in range(rng.randint(1, 20)):
            dev = rng.choice(devs)
            kind = rng.random()
            if kind < 0.75:        # a batch: in order, ahead (a hole), or resent
                lo = rng.randint(1, 60)
                seqs = sorted(rng.sample(range(lo, lo + 12), rng.randint(1, 6)))
                if rng.random() < 0.1:
                    seqs.append(seqs[0])             # a seq twice in one batch
                ops.append(("add_readings", (dev, readings(seqs), 1, "", ())))
            elif kind < 0.9:
                a = rng.randint(1, 80)
                ops.append(("add_gap", (dev, a, a + rng.randint(0, 5), "dropped")))
            else:
                ops.append(("add_readings", (dev, readings([rng.randint(1, 80)]), 1, "",
                                             ((rng.randint(1, 80), "bad"),))))
        got, want = bulk.apply(ops), ref.apply(ops)
        norm = [r if isinstance(r, int) else (r[0], [x["q"] for x in r[1]]) for r in got]
        assert norm == [r if isinstance(r, int) else (r[0], [x["q"] for x in r[1]])
                        for r in want]
    # in order up to a stored gap just above (no reading above the ack): the run and the gap
    for st in (bulk, ref):
        st.apply([("add_readings", ("g", readings([1]), 1, "", ())),
                  ("add_gap", ("g", 3, 5, "dropped")), ("add_gap", ("g", 7, 7, "dropped"))])
        assert st.apply([("add_readings", ("g", readings([2]), 1, "", ())),
                         ("add_readings", ("h", readings([1]), 1, "", ()))])[0][0] == 5
        assert st.apply([("add_readings", ("g", readings([6, 8]), 1, "", ()))])[0][0] == 8
    devs.append("g")
    for d in devs:
        assert bulk.ack(d) == ref.ack(d)
        assert [r["q"] for r in bulk.readings(d)] == [r["q"] for r in ref.readings(d)]
    strip = [{k: v for k, v in d.items() if k not in ("first_seen", "last_seen")}
             for d in bulk.devices()]
    assert strip == [{k: v for k, v in d.items() if k not in ("first_seen", "last_seen")}
                     for d in ref.devices()]
    bulk.close()
    ref.close()
