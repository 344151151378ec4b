"""Desired state, reported state, their audit, and the history buckets, on every store (the
`stores`/`store` fixtures: SQLite and PostgreSQL)."""
import pytest

from fieldlink_tools.collector.store import StoreDataError


def test_versions_only_grow_and_every_change_is_audited(store):
    a = store.set_desired("d1", "relay", {"v": 1}, "alice")
    assert a["ver"] == 1 and a["v"] == 1 and a["set_by"] == "alice" and "rule" not in a
    rule = {"n": "env.temperature", "above": 26.0, "below": 24.0, "when_above": 1,
            "when_below": 0, "enabled": True}
    b = store.set_desired("d1", "relay", {"rule": rule}, "bob")
    assert b["ver"] == 2 and b["v"] == 1 and b["rule"] == rule       # v kept
    c = store.set_desired("d1", "relay", {"v": 0, "rule": None}, "alice")
    assert c["ver"] == 3 and c["v"] == 0 and "rule" not in c          # rule removed
    other = store.set_desired("d1", "fan", {"v": 0.5}, "alice")
    assert other["ver"] == 1                                           # per output
    assert store.set_desired("d2", "relay", {"v": 1}, "x")["ver"] == 1  # per device
    d = store.desired("d1")
    assert sorted(d) == ["fan", "relay"] and d["relay"]["ver"] == 3 and d["relay"]["v"] == 0
    audit = store.audit("d1")
    assert [(x["out"], x["ver"], x["who"]) for x in audit] == [
        ("fan", 1, "alice"), ("relay", 3, "alice"), ("relay", 2, "bob"), ("relay", 1, "alice")]
    assert audit[3]["from"] is None and audit[3]["to"] == {"v": 1}
    assert audit[1]["from"] == {"v": 1, "rule": rule} and audit[1]["to"] == {"v": 0}
    assert len(store.audit("d1", limit=2)) == 2


def test_desired_reported_and_audit_survive_a_reopen(stores):
    s = stores.open()
    s.set_desired("d1", "relay", {"v": 1}, "alice")
    s.set_desired("d1", "relay", {"v": 0}, "alice")
    s.record_reported("d1", {"relay": {"v": 0, "ver": 2, "why": "command"}})
    s.close()
    s = stores.open()
    assert s.desired("d1")["relay"]["ver"] == 2
    assert s.reported("d1")["relay"]["ver"] == 2 and s.reported("d1")["relay"]["v"] == 0
    assert len(s.audit("d1")) == 2
    # and the next version continues from the stored one
    assert s.set_desired("d1", "relay", {"v": 1}, "bob")["ver"] == 3


def test_an_older_reported_ver_does_not_roll_back(store):
    kept = store.record_reported("d1", {"relay": {"v": 1, "ver": 5, "why": "command"},
                                        "fan": {"v": 0.25, "ver": 2, "why": "command"}})
    assert sorted(kept) == ["fan", "relay"]
    kept = store.record_reported("d1", {"relay": {"v": 0, "ver": 4, "why": "command"},
                                        "fan": {"v": 0.0, "ver": 2, "why": "failsafe"}})
    assert sorted(kept) == ["fan"]                   # the same ver: a rule/failsafe change
    rep = store.reported("d1")
    assert rep["relay"]["v"] == 1 and rep["relay"]["ver"] == 5
    assert rep["fan"]["why"] == "failsafe" and rep["fan"]["v"] == 0.0
    assert isinstance(rep["fan"]["v"], float) and isinstance(rep["relay"]["v"], int)
    store.record_reported("d1", {"relay": {"v": None, "ver": 6, "why": "refused",
                                           "err": "unknown output"}})
    assert store.reported("d1")["relay"]["err"] == "unknown output"


def test_a_bad_desired_op_fails_alone_in_a_group(store):
    out = store.apply([("set_desired", ("d1", "relay", {"v": float("nan")}, "a")),
                       ("set_desired", ("d1", "fan", {"v": 1}, "a"))])
    assert isinstance(out[0], (StoreDataError, ValueError, Exception))
    assert out[1]["ver"] == 1
    assert sorted(store.desired("d1")) == ["fan"] and len(store.audit("d1")) == 1


def _reading(q, ts, v, n="env.temperature"):
    return {"q": q, "ts": ts, "up": q, "n": n, "v": v, "u": "C"}


def test_history_buckets_are_min_avg_max_in_the_database(store):
    start = 1_700_000_000.0
    # 3 buckets of 10 s over 30 s: values 1..9 in the first, 20 and 40 in the second, none in
    # the third; a null, another quantity and readings outside the range are left out
    rs = [_reading(i + 1, start + i, i + 1) for i in range(9)]
    rs += [_reading(10, start + 10, 20.0), _reading(11, start + 19.5, 40)]
    rs += [_reading(12, start + 12, None), _reading(13, start + 5, 999, n="other"),
           _reading(14, start - 1, -5), _reading(15, start + 30, 77)]
    store.add_readings("d1", rs)
    h = store.history("d1", "env.temperature", start, start + 30, 3)
    assert h == [[start, 1, 5.0, 9, 9], [start + 10, 20.0, 30.0, 40, 2]]
    assert store.history("d1", "env.temperature", start, start + 30, 100000)[0][4] == 1
    assert store.history("nobody", "env.temperature", start, start + 30, 3) == []
    with pytest.raises(ValueError):
        store.history("d1", "env.temperature", start, start, 3)


def test_health_over_time_is_bucketed_the_same_way(store):
    for heap, rssi in ((1000, -60), (3000, -70), (2000, None)):
        store.record_health("d1", {"heap_free": heap, "heap_min": 500, "reconnects": 1,
                                   "dropped": 0, "rssi": rssi, "uptime_s": 5, "boot": 1,
                                   "held": 0})
    import time
    now = time.time()
    h = store.health_series("d1", "heap_free", now - 3600, now + 1, 1)
    assert len(h) == 1 and h[0][1:] == [1000, 2000.0, 3000, 3]
    r = store.health_series("d1", "rssi", now - 3600, now + 1, 1)
    assert r[0][1:] == [-70, -65.0, -60, 2]          # a null rssi is not a number
    with pytest.raises(ValueError):
        store.health_series("d1", "body", now - 3600, now + 1, 1)
