"""A gap resent with a wider range. The device's outbox keeps a gap until an ack passes it and
sends every pending gap again on each new connection, merged with the newer drops next to it
(Outbox.on_connect): over a flaky link while its outbox is full the same seqs arrive again
inside wider and wider gaps. The store records each seq's gap once, so the dropped count the
dashboard shows stays the device's own, however many reconnects it took. On every store."""
from collector_fixtures import readings
from fieldlink import proto
from fieldlink.outbox import Outbox


def rd(q):
    return proto.reading(q, None, q, "env.temperature", 21.5, "C")


def test_gaps_merged_across_reconnects_are_counted_once(store):
    s = store
    ob = Outbox(ram_bytes=1024)  # RAM only: a full outbox drops its oldest, counted
    n = 0
    for _ in range(50):  # 50 connections that each die before the server's ack passes the gap
        ob.on_connect()
        ob.welcome(s.ack("d"))
        for g in ob.pending_gaps():
            s.add_gap("d", *g)
        ob.next_batch(4, 4)  # in flight (never dropped), the connection drops unacked
        for _ in range(5):  # the link is down: more readings, the oldest unsent ones dropped
            n += 1
            ob.push(n, rd(n))
    ob.on_connect()  # finally a good link: everything goes, gaps first
    ob.welcome(s.ack("d"))
    for _ in range(1000):
        for g in ob.pending_gaps():
            ob.ack(s.add_gap("d", *g))
        b = ob.next_batch(20, 64)
        if not b:
            break
        ob.ack(s.add_readings("d", readings([int(t[5:t.index(",")]) for t in b]))[0])
    assert ob.held() == 0 and s.ack("d") == n
    assert ob.dropped > 100  # the campaign did drop, while gaps were pending
    dev = s.devices()[0]
    assert dev["dropped_gaps"] == ob.dropped, (dev["dropped_gaps"], ob.dropped)
    covered = []
    for g in s.gaps("d"):
        covered += range(g["from"], g["to"] + 1)
    assert len(covered) == len(set(covered)) == ob.dropped  # no seq in two gap rows
    assert dev["gaps"] <= 50
    s.close()


def test_exact_and_wider_resends_of_a_gap(store):
    s = store
    assert s.add_gap("d", 6, 8, "dropped") == 0  # 1..5 not stored yet: the ack waits
    s.add_gap("d", 6, 8, "dropped")              # resent as it was
    s.add_gap("d", 6, 12, "dropped")             # resent merged with newer drops
    s.add_gap("d", 4, 12, "dropped")             # and with older ones
    assert s.add_readings("d", readings([1, 2, 3]))[0] == 12
    assert [(g["from"], g["to"]) for g in s.gaps("d")] == [(4, 5), (6, 8), (9, 12)]
    assert s.devices()[0]["dropped_gaps"] == 9
    # another kind of gap over the same seqs is still its own record
    s.add_gap("d", 6, 7, "reboot")
    assert ("reboot", 6, 7) in [(g["why"], g["from"], g["to"]) for g in s.gaps("d")]
    s.close()
