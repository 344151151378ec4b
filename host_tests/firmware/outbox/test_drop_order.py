# dual: runs on CPython and on MicroPython
"""Outbox: the head (the readings of the oldest flash segments, loaded for sending) is dropped
first when the outbox is full, like any other readings the server cannot hold: a head segment
none of whose readings is in flight or may be on the server (all above the sent high-water
mark) is the oldest thing on flash. Before, the drop skipped the head altogether: its unsent
readings stayed and newer segments went first. A head segment that also holds readings the
server may have is kept whole (its file must stay for those; dropping its unsent rest would
free nothing), as a listed segment across the mark is."""
from dualsupport import rmtree, tmpdir
from outbox_model import Server, drain_to, flash_side

from fieldlink import proto
from fieldlink.outbox import DirStore, Outbox


def rd(q):
    return proto.reading(q, None, q * 100, "env.temperature", 20 + q % 7, "C")


def push(ob, n):
    for _ in range(n):
        ob.push(ob.next_seq, rd(ob.next_seq))


def spilled(d):
    """An outbox whose 40 readings are on flash (segments 1-8, 9-15, 16-22, ...), the link
    up: connected and welcomed with ack 0."""
    ob = Outbox(ram_bytes=1024, flash_bytes=4096, store=DirStore(d), seg_bytes=512,
                seq_block=16)
    push(ob, 40)
    ob.spill(False)
    ob.on_connect()
    ob.welcome(0)
    return ob


def dropped_seqs(srv, top):
    return [q for q in range(1, top + 1) if srv.at(q) == srv.DROPPED]


def outage_then_drain(ob, srv, n):
    """The link drops, n readings are made (the flash fills: drops), the link comes back
    and everything drains; checks the counts are exact. The dropped seqs."""
    push(ob, n)
    assert ob.dropped > 0
    top = ob.next_seq - 1
    drain_to(ob, srv)  # (the model server fails a `gap dropped` over a seq it stored)
    assert ob.held() == 0 and srv.ack == top, (ob.held(), srv.ack, top)
    got = dropped_seqs(srv, top)
    assert len(got) == ob.dropped, (len(got), ob.dropped)
    return got


def test_unsent_head_readings_are_the_first_dropped():
    # 1-3 sent and acked, 4-8 loaded in the head and never sent; then a long outage.
    # Before: 4-8 kept, 9-82 dropped. Now the oldest unsent go first: 4 on, in one run.
    d = tmpdir()
    try:
        ob = spilled(d)
        srv = Server()
        ob.ack(srv.batch(ob.next_batch(3, 64)))
        assert flash_side(ob)._hq == [4, 5, 6, 7, 8]  # (the head: the rest of segment 1-8)
        got = outage_then_drain(ob, srv, 100)
        assert got == list(range(4, 4 + len(got))), got[:12]
        for q in range(1, 4):
            assert srv.at(q) == srv.STORED, q
    finally:
        rmtree(d)


def test_head_readings_the_server_may_hold_are_never_dropped():
    # 1-10 sent, 4-10 lost on the way; a reconnect (the server holds 1-3) and 4-5 sent
    # again, stored, the ack lost: the server may hold 4-5. Segment 1-8 (the head's first)
    # stays whole, 6-8 with it (its file must stay for 4-5). Segment 9-15, loaded too (it
    # was sent once, before the welcome) but not sent since, is the oldest that can go.
    d = tmpdir()
    try:
        ob = spilled(d)
        srv = Server()
        srv.batch(ob.next_batch(3, 64))   # stored, the ack is lost
        ob.next_batch(7, 64)              # 4-10 lost on the way, the link drops
        ob.on_connect()
        ob.welcome(srv.ack)               # a reconnect: the server holds 1-3
        assert flash_side(ob)._hq[0] == 4 and flash_side(ob)._hq[-1] == 15  # (segments 1-8 and 9-15 loaded)
        srv.batch(ob.next_batch(2, 64))   # 4-5 stored, the ack lost; the link drops
        got = outage_then_drain(ob, srv, 100)
        assert got == list(range(9, 9 + len(got))), got[:12]
        for q in range(1, 9):
            assert srv.at(q) == srv.STORED, q
    finally:
        rmtree(d)


def test_a_head_loaded_before_a_reconnect_can_go_after_the_welcome():
    # 1-10 sent, lost with the connection; the welcome says the server holds nothing, and
    # the link drops again before anything is sent. Everything in the head (segments 1-8 and
    # 9-15) is droppable now: the oldest go first, from seq 1.
    d = tmpdir()
    try:
        ob = spilled(d)
        srv = Server()
        ob.next_batch(10, 64)
        ob.on_connect()
        ob.welcome(0)
        got = outage_then_drain(ob, srv, 100)
        assert got == list(range(1, 1 + len(got))), got[:12]
    finally:
        rmtree(d)
