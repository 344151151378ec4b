# dual: runs on CPython and on MicroPython
"""Outbox: the RAM readings' index (seq, offset, length per reading) is a ring of arrays
allocated once, sized by the shortest reading proto.reading() makes; readings shorter than
that fill it before the buffer and are spilled or dropped like a full buffer's."""
import json

from dualsupport import drain, rmtree, tmpdir
from fieldlink import proto
from fieldlink.outbox import DirStore, Outbox


def seqs(texts):
    return [json.loads(t)["q"] for t in texts]


def tiny(q):
    """Far shorter than any proto.reading() (the index is sized for those): fills the index
    before the buffer."""
    return '{"q":%d,"v":0}' % q


def fill_tiny(ob, n):
    for _ in range(n):
        ob.push(ob.next_seq, tiny(ob.next_seq))


def test_ram_index_is_sized_by_the_shortest_reading():
    assert len(proto.reading(1, None, 0, "", None, None)) + 1 == 48  # with its ","
    ob = Outbox(ram_bytes=1024)
    assert ob.ring.cap == 1024 // 48 + 1 and len(ob.ring._rq) == len(ob.ring._ro) == ob.ring.cap
    for q in range(1, 201):                           # the shortest readings there are
        ob.push(q, proto.reading(q, None, 0, "", None, ""))
        assert ob.ring.n < ob.ring.cap                       # the buffer is full first, always
    assert ob.dropped == 200 - ob.held()


def test_index_full_of_short_readings_drops_the_oldest_counted():
    ob = Outbox(ram_bytes=1024)
    cap = ob.ring.cap
    fill_tiny(ob, 100)                                # their bytes fit; the index does not
    assert ob.held() == cap and ob.dropped == 100 - cap and ob.ring.used < 1024 // 2
    assert ob.pending_gaps() == [(1, 100 - cap, "dropped")]
    assert seqs(ob.next_batch(500, 500)) == list(range(101 - cap, 101))
    fill_tiny(ob, 3)                                  # all in flight: the new ones go
    assert ob.dropped == 100 - cap + 3 and ob.held() == cap
    ob.ack(100)
    fill_tiny(ob, 2)
    assert ob.held() == 2 and seqs(ob.next_batch(10, 64)) == [104, 105]


def test_index_full_of_short_readings_spills_and_is_never_resized():
    d = tmpdir()
    try:
        ob = Outbox(ram_bytes=1024, flash_bytes=16384, store=DirStore(d), seg_bytes=256)
        arrs = (ob.ring._rq, ob.ring._ro)
        fill_tiny(ob, 300)
        assert ob.dropped == 0 and ob.held() == 300 and ob.spills
        assert drain(ob) == list(range(1, 301)) and ob.held() == 0
        assert arrs == (ob.ring._rq, ob.ring._ro) and len(ob.ring._ro) == ob.ring.cap
    finally:
        rmtree(d)


def test_dropping_inside_a_wrapped_index_keeps_the_order():
    ob = Outbox(ram_bytes=1024)
    cap = ob.ring.cap
    for _ in range(cap - 3):                          # move the ring's head near its end
        fill_tiny(ob, 1)
        ob.ack(ob.next_seq - 1)
    fill_tiny(ob, 6)                                  # in slots cap-3 .. 2: wrapped
    sent = seqs(ob.next_batch(4, 64))                 # in flight, across the wrap
    ob.on_connect()
    fill_tiny(ob, cap)                                # full: drops what follows the 4
    kept = ob.next_seq - (cap - 4)
    assert seqs(ob.next_batch(500, 500)) == sent + list(range(kept, ob.next_seq))
    assert ob.pending_gaps() == [(sent[-1] + 1, kept - 1, "dropped")]
