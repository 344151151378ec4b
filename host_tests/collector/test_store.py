"""The store suite, on every store (SQLite and PostgreSQL: the `stores`/`store` fixtures): each
(device, seq) stored once, the cumulative ack as docs/protocol.md defines it (checked against a
brute-force model), durability across reopen, read-only access."""
import itertools
import random

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from collector_fixtures import readings
from fieldlink_tools.collector.store import StoreError


def model_ack(stored, gaps):
    """The definition: the largest N with every seq <= N stored or inside a gap."""
    covered = set(stored)
    for a, b in gaps:
        covered.update(range(a, b + 1))
    n = 0
    while n + 1 in covered:
        n += 1
    return n


def test_resends_are_stored_once_and_new_ones_reported(store):
    s = store
    ack, new = s.add_readings("d", readings([1, 2, 3]), boot=2)
    assert ack == 3 and [r["q"] for r in new] == [1, 2, 3] and new[0]["boot"] == 2
    ack, new = s.add_readings("d", readings([2, 3, 4]))
    assert ack == 4 and [r["q"] for r in new] == [4]
    ack, new = s.add_readings("d", readings([1, 2, 3, 4]))
    assert ack == 4 and new == []
    assert [r["q"] for r in s.readings("d")] == [1, 2, 3, 4]
    assert s.devices()[0]["readings"] == 4 and s.devices()[0]["last_seq"] == 4
    assert s.ack("other") == 0 and s.readings("other") == []
    s.close()


def test_values_keep_their_types_and_missing_values_say_why(store):
    s = store
    s.add_readings("d", [
        {"q": 1, "ts": 1700000000.125, "up": 5, "n": "a.count", "v": 7, "u": ""},
        {"q": 2, "ts": None, "up": 6, "n": "env.temperature", "v": 21.5, "u": "C"},
        {"q": 3, "ts": None, "up": 7, "n": "env.humidity", "v": None, "u": "%RH", "e": "crc"},
    ])
    r1, r2, r3 = s.readings("d")
    assert r1["v"] == 7 and isinstance(r1["v"], int) and r1["ts"] == 1700000000.125
    assert r2["v"] == 21.5 and r2["ts"] is None and "e" not in r2
    assert r3["v"] is None and r3["e"] == "crc"
    assert [r["q"] for r in s.latest("d", 2)] == [3, 2]
    assert [r["q"] for r in s.readings("d", since=1, limit=1)] == [2]
    s.close()


def test_ack_waits_for_holes_and_gaps_fill_them(store):
    s = store
    assert s.add_readings("d", readings([1, 2, 6, 7]))[0] == 2
    assert s.add_gap("d", 3, 4, "dropped") == 4
    assert s.add_readings("d", readings([5]))[0] == 7
    assert s.add_gap("d", 8, 10, "reboot") == 10
    assert s.add_readings("d", readings([9]))[0] == 10   # inside a reboot gap: still stored
    assert [r["q"] for r in s.readings("d")] == [1, 2, 5, 6, 7, 9]
    assert s.add_gap("d", 3, 4, "dropped") == 10          # resent gap: stored once
    assert len(s.gaps("d")) == 2 and s.devices()[0]["dropped_gaps"] == 2
    s.close()


def test_everything_survives_reopen(stores):
    s = stores.open()
    s.add_readings("d", readings([1, 2, 3, 5]))
    s.add_gap("d", 7, 8, "dropped")
    s.record_hello("d", {"fw": "1.2.3", "boot": 4})
    s.record_health("d", {"heap_free": 1000, "rssi": None})
    s.close()
    s = stores.open()
    assert s.ack("d") == 3
    assert s.add_readings("d", readings([4, 6]))[0] == 8
    dev = s.devices()[0]
    assert dev["hello"]["fw"] == "1.2.3" and dev["health"]["heap_free"] == 1000
    assert s.health_history("d")[0]["rssi"] is None
    s.close()


def test_health_keeps_the_newest_per_device(stores):
    # A device sends health once a minute for months: only the newest keep_health rows per
    # device stay (before: every message, ~1440 rows a day per device, forever).
    s = stores.open(keep_health=5)
    for i in range(12):
        s.record_health("a", {"heap_free": i})
        if i < 3:
            s.record_health("b", {"heap_free": 100 + i})
    assert [h["heap_free"] for h in s.health_history("a")] == [11, 10, 9, 8, 7]
    assert [h["heap_free"] for h in s.health_history("b")] == [102, 101, 100]
    assert s.devices()[0]["health"]["heap_free"] == 11   # the latest, as before
    s.close()
    s = stores.open(keep_health=0)                      # 0 keeps all
    for i in range(3):
        s.record_health("a", {"heap_free": 20 + i})
    assert len(s.health_history("a", limit=100)) == 8
    s.close()


def test_readonly_view_beside_a_writer(stores):
    s = stores.open()
    s.add_readings("d", readings([1, 2]))
    ro = stores.readonly()
    assert [r["q"] for r in ro.readings("d")] == [1, 2] and ro.ack("d") == 2
    s.add_readings("d", readings([3]))
    assert ro.ack("d") == 3                     # sees the writer's commits
    with pytest.raises(StoreError):
        ro.add_readings("d", readings([4]))
    ro.close()
    s.close()
    with pytest.raises(StoreError):
        stores.missing().readonly()


def test_a_failed_batch_leaves_nothing_behind(store):
    s = store
    bad = readings([1, 2]) + [{"q": 3, "up": 0, "v": 1, "u": "C"}]   # no name: NOT NULL fails
    bad[2]["n"] = None
    with pytest.raises(StoreError):
        s.add_readings("d", bad)
    assert s.readings("d") == [] and s.ack("d") == 0
    assert s.add_readings("d", readings([1, 2, 3]))[0] == 3
    s.close()
    with pytest.raises(StoreError):
        s.ack("d")                                # closed


_devices = itertools.count()


# the same examples every run, whatever .hypothesis/ holds; one store for all of them, a device
# of its own for each
@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(
    st.tuples(st.just("r"), st.integers(1, 40), st.integers(0, 8)),     # readings a..a+n
    st.tuples(st.just("g"), st.integers(1, 40), st.integers(0, 5)),     # gap a..a+n
), max_size=25), st.integers(0, 2**32))
def test_ack_matches_the_definition(stores, ops, seed):
    rnd = random.Random(seed)
    s = stores.open(synchronous="NORMAL")
    dev = "d%d" % next(_devices)
    stored, gaps = set(), []
    for kind, a, n in ops:
        if kind == "r":
            seqs = sorted(rnd.sample(range(a, a + n + 1), rnd.randint(0, n + 1)))
            ack, new = s.add_readings(dev, readings(seqs))
            assert {r["q"] for r in new} == set(seqs) - stored
            stored.update(seqs)
        else:
            ack = s.add_gap(dev, a, a + n, rnd.choice(["dropped", "reboot"]))
            gaps.append((a, a + n))
        assert ack == model_ack(stored, gaps)
    assert [r["q"] for r in s.readings(dev)] == sorted(stored)
    s.close()


def needs_apply(s):
    if not hasattr(s, "apply"):
        pytest.skip("%s has no apply() yet (group commit: Store.apply)" % type(s).__name__)


def test_a_group_is_one_transaction_with_each_op_answered_as_alone(stores):
    s = stores.open()
    needs_apply(s)
    bad = readings([1])
    bad[0]["n"] = None                                     # NOT NULL: fails on its data
    out = s.apply([
        ("record_hello", ("a", {"fw": "1"})),
        ("enter_epoch", ("a", "e1", 1)),
        ("add_readings", ("a", readings([1, 2, 3]), 7, "e1")),
        ("add_readings", ("b", bad)),
        ("add_gap", ("a", 4, 5, "dropped")),
        ("add_readings", ("a", readings([6]), 7, "e1")),   # the same device again, in order
        ("add_readings", ("b", readings([1, 2]))),
        ("record_health", ("b", {"heap_free": 5})),
    ])
    assert out[0] is None and out[7] is None
    assert out[1]["epoch"] == "e1" and out[1]["started"] is False
    assert out[2][0] == 3 and [r["q"] for r in out[2][1]] == [1, 2, 3]
    assert out[2][1][0]["boot"] == 7 and out[2][1][0]["epoch"] == "e1"
    assert isinstance(out[3], StoreError)                  # that op alone rolled back
    assert out[4] == 5 and out[5][0] == 6 and out[6][0] == 2
    assert [r["q"] for r in s.readings("a")] == [1, 2, 3, 6]
    assert [r["q"] for r in s.readings("b")] == [1, 2] and s.ack("b") == 2
    assert s.health_history("b")[0]["heap_free"] == 5
    assert s.apply([]) == []
    with pytest.raises(ValueError):
        s.apply([("close", ())])                           # only the writes


def test_single_writes_are_groups_of_one(stores):
    s = stores.open()
    needs_apply(s)
    bad = readings([1])
    bad[0]["n"] = None
    assert isinstance(s.apply([("add_readings", ("d", bad))])[0], StoreError)
    with pytest.raises(StoreError):
        s.add_readings("d", bad)
    assert s.apply([("add_readings", ("d", readings([1])))])[0][0] == 1


def test_two_writers_of_one_device_store_each_seq_once(stores):
    # Two collectors sharing a database, both handed the same device's resends: the device
    # row lock (PostgreSQL) / the write lock (SQLite) keeps exactly-once and the ack true.
    import threading
    a, b = stores.open(), stores.open()
    news, errors = [], []

    def writer(s, seed):
        rnd = random.Random(seed)
        try:
            for top in range(5, 205, 5):
                seqs = list(range(max(1, top - 12), top + 1))
                rnd.shuffle(seqs)
                news.extend(r["q"] for r in s.add_readings("d", readings(seqs))[1])
        except Exception as e:
            errors.append(e)
    threads = [threading.Thread(target=writer, args=(s, i)) for i, s in enumerate((a, b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert sorted(news) == list(range(1, 201))             # each reported new exactly once
    assert [r["q"] for r in a.readings("d")] == list(range(1, 201))
    assert a.ack("d") == b.ack("d") == 200 and a.devices()[0]["readings"] == 200
