# dual: runs on CPython and on MicroPython
"""Outbox: catching up from flash on a small heap, loading the next segment into the head
(its lists grow by a segment: ~700 B at 96k) may find no block. With readings in flight the
batch goes out with what the head has, or waits for their acks (which shorten the head), and
the segment is loaded then; only with nothing in flight and nothing to send does the sender
see the MemoryError (and the link reconnects, as before). Found with `fieldlink soak --rom
--heapsize 96k`: 96 'stream: MemoryError allocating 392-640 bytes' in one 5-minute run, each a
reconnect, ~50 readings per connection while a backlog drained."""
from dualsupport import rmtree, tmpdir

from outbox_model import flash_side
from fieldlink import proto
from fieldlink.outbox import DirStore, Outbox


def rd(q):
    return proto.reading(q, None, q * 100, "env.temperature", 20 + q % 7, "C")


def spilled(d, n=40):
    """n readings on flash (segments of ~7), the link up, welcomed with ack 0."""
    ob = Outbox(ram_bytes=1024, flash_bytes=8192, store=DirStore(d), seg_bytes=512,
                seq_block=16)
    for _ in range(n):
        ob.push(ob.next_seq, rd(ob.next_seq))
    ob.spill(False)
    ob.on_connect()
    ob.welcome(0)
    return ob


def seqs(batch):
    return [proto.reading_seq(t.encode()) for t in batch]


class NoHeap:
    """Stands in for the flash side's load_segment: no block for the head's new lists. (Set
    on the outbox's flash.Segments, loaded while the flash holds readings.)"""

    def __init__(self):
        self.calls = 0

    def __call__(self, led):
        self.calls += 1
        raise MemoryError("memory allocation failed, allocating 608 bytes")


def test_no_heap_to_load_a_segment_with_readings_in_flight_is_not_a_failure():
    d = tmpdir()
    ob = spilled(d)
    fl = flash_side(ob)
    real = fl.load_segment
    try:
        first = seqs(ob.next_batch(4, 64))  # the first segment loaded, 4 of it in flight
        assert first == [1, 2, 3, 4], first
        nh = NoHeap()
        fl.load_segment = nh
        # the rest of the loaded segment goes; the next one cannot be loaded: no exception
        # (before: MemoryError, the connection failed and all of it went again)
        rest = seqs(ob.next_batch(64, 64))
        assert nh.calls == 1 and rest and rest[0] == 5, (nh.calls, rest)
        top = rest[-1]
        # nothing left in the head, readings in flight: wait for their acks (an empty batch)
        assert ob.next_batch(64, 64) == [] and nh.calls == 2
        ob.ack(top)  # the head emptied: the load is tried again and works now
        fl.load_segment = real
        got = first + rest
        while True:
            b = seqs(ob.next_batch(8, 64))
            if not b:
                break
            got += b
            ob.ack(b[-1])
        assert got == list(range(1, 41)), got
        assert ob.held() == 0
    finally:
        fl.load_segment = real
        rmtree(d)


def test_no_heap_to_load_with_nothing_in_flight_is_the_senders_failure():
    d = tmpdir()
    ob = spilled(d)
    fl = flash_side(ob)
    real = fl.load_segment
    try:
        fl.load_segment = NoHeap()
        failed = False
        try:
            ob.next_batch(8, 64)
        except MemoryError:
            failed = True
        assert failed  # nothing to send, nothing to wait for: the link reconnects
        fl.load_segment = real
        assert seqs(ob.next_batch(8, 64)) == list(range(1, 9))  # nothing lost by it
    finally:
        fl.load_segment = real
        rmtree(d)
