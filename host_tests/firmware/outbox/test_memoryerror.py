"""Outbox under MemoryError: an allocation that fails in the middle of a spill, a segment load,
an ack or a batch must leave the outbox consistent. The board then goes on (the app skips the
reading, the link reconnects), and every reading still reaches the server once, each batch in
order. CPython only: MemoryError is injected at the list operations of the flash queue (the
head's seqs and line offsets, the loaded segments) and at the growing and slicing of the
segment table, which the firmware does before it commits anything, and at the flash files:
each open and each line read (a batch from the head is read from its segment file when it is
sent).

Before: a MemoryError between the head's seq append and its text append left them out of
step, and the board sent texts under the wrong seqs (the collector closed with 1008, "batch.r:
seqs must increase (61 after 64)", seen on a 144k heap)."""
import json
from array import array

import pytest

from outbox_model import batch_text

from fieldlink import proto
from fieldlink.outbox import DirStore, Outbox


class Budget:
    """Fails the n-th list operation it is asked about (then never again)."""

    def __init__(self, n):
        self.n = n
        self.hit = False

    def tick(self):
        self.n -= 1
        if self.n == 0:
            self.hit = True
            raise MemoryError("injected")


class Flaky(list):
    budget = None

    def _tick(self):
        if Flaky.budget is not None:
            Flaky.budget.tick()

    def __add__(self, other):
        self._tick()
        return Flaky(list.__add__(self, other))

    def append(self, x):
        self._tick()
        list.append(self, x)

    def extend(self, xs):
        self._tick()
        list.extend(self, xs)


class FlakyArray(array):
    """The segment table (flash.Segments._segs, an array of ints): growing it and replacing a slice
    of it tick the budget, as both may allocate on MicroPython."""

    def __add__(self, other):
        Flaky.budget and Flaky.budget.tick()
        return FlakyArray(self.typecode, array.__add__(self, other))

    def extend(self, xs):
        Flaky.budget and Flaky.budget.tick()
        array.extend(self, xs)

    def __setitem__(self, i, v):
        if isinstance(i, slice):
            Flaky.budget and Flaky.budget.tick()
        array.__setitem__(self, i, v)


class FlakyFile:
    """A file whose line reads tick the budget."""

    def __init__(self, f):
        self.f = f

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()

    def readline(self):
        Flaky.budget and Flaky.budget.tick()
        return self.f.readline()

    def seek(self, o):
        return self.f.seek(o)

    def read(self, *n):
        return self.f.read(*n)

    def write(self, data):
        return self.f.write(data)


class FlakyStore(DirStore):
    """Each open ticks the budget."""

    def file(self, name, mode="r"):
        Flaky.budget and Flaky.budget.tick()
        return FlakyFile(DirStore.file(self, name, mode))


def rd(q):
    return proto.reading(q, None, q * 100, "env.temperature", 20 + q % 7, "C")


class FlakyListing(FlakyStore):
    """Each name of a directory listing ticks the budget too."""

    def entries(self):
        for e in DirStore.entries(self):
            Flaky.budget and Flaky.budget.tick()
            yield e


def flaky(fl):
    """The flash side's lists and table (a flash.Segments) made Flaky."""
    for name in ("_hq", "_ho", "_hsegs"):
        setattr(fl, name, Flaky(getattr(fl, name)))
    fl._segs = FlakyArray(fl._segs.typecode, fl._segs)


class FlakyOutbox(Outbox):
    """An Outbox whose flash side is made Flaky each time it is loaded (at boot, at a spill
    after the flash held no readings)."""

    def _flash(self):
        fl = self._fl
        if fl is None:
            fl = Outbox._flash(self)
            flaky(fl)
        return fl


def push_all(ob, n):
    """n readings, each pushed until it is taken (the app skips one on MemoryError: the
    reading got no seq, so the next push uses the same seq)."""
    while ob.next_seq <= n:
        try:
            ob.push(ob.next_seq, rd(ob.next_seq))
        except MemoryError:
            pass


def cum(stored):
    """The collector's cumulative ack: it stores in order."""
    a = 0
    while a + 1 in stored:
        a += 1
    return a


def send(ob, stored, batches, ack=True):
    """Up to `batches` batches; a MemoryError ends the connection, and the next one starts
    with on_connect/welcome as link_hello does. True when nothing is left to send."""
    for _ in range(batches):
        try:
            b = batch_text(ob, 20, 64)
            if not b:
                return True
            qs = [r["q"] for r in json.loads("[%s]" % b)]
            assert qs == sorted(set(qs)), "batch out of order: %s" % qs
            stored.update(qs)
            if ack:
                ob.ack(cum(stored))
        except MemoryError:
            ob.on_connect()
            ob.welcome(cum(stored))
    return False


@pytest.mark.parametrize("fail_at", range(1, 81))
def test_memoryerror_anywhere_loses_nothing_and_keeps_order(tmp_path, fail_at):
    ob = FlakyOutbox(ram_bytes=1024, flash_bytes=32768, store=FlakyStore(str(tmp_path)),
                     seg_bytes=512)
    Flaky.budget = Budget(fail_at)
    stored = set()
    try:
        push_all(ob, 120)                      # spills: segments on flash
        ob.on_connect()
        ob.welcome(0)
        send(ob, stored, 3, ack=False)         # in flight, not acked yet
        push_all(ob, 200)                      # more spills while sending
        assert send(ob, stored, 400)
    finally:
        budget, Flaky.budget = Flaky.budget, None
    assert budget.hit                          # the failure happened somewhere
    assert stored == set(range(1, 201)), sorted(set(range(1, 201)) - stored)[:10]
    assert ob.held() == 0 and ob.dropped == 0


def test_memoryerror_in_directory_scans(tmp_path):
    """The segment table's window (16) overflows: refilling it and dropping an unlisted
    segment list the directory (flash.scan, through DirStore.entries). A MemoryError at the listing or at any
    name in it, at the table's growing or at a flash read must change nothing: every reading
    is stored or declared once, a `gap dropped` never covers a seq the server holds, each
    batch is in order, the counts are exact."""
    from outbox_model import Server


    def run(fail_at):
        """One run with a MemoryError at the fail_at-th tick: its budget."""
        d = tmp_path / str(fail_at)

        def new():
            return FlakyOutbox(ram_bytes=1024, flash_bytes=4096, store=FlakyListing(str(d)),
                               seg_bytes=100, seq_block=16)
        ob = new()
        srv = Server()
        push_all(ob, 40)
        ob.spill(False)                        # 40 one-reading segments: 16 listed
        ob.on_connect()
        ob.welcome(0)
        srv.batch(ob.next_batch(30, 64))       # stored, the ack is lost; a power cut:
        ob = None
        ob = new()
        Flaky.budget = Budget(fail_at)
        try:
            push_all(ob, ob.next_seq + 99)     # a full flash: unlisted segments dropped
            top = ob.next_seq - 1
            up = False
            for _ in range(1000):
                try:
                    if not up:                 # (a MemoryError ends the connection)
                        ob.on_connect()
                        ob.welcome(srv.ack)
                        up = True
                    for g in ob.pending_gaps():
                        srv.gap(*g)
                    b = ob.next_batch(20, 64)
                    if not b:
                        break
                    qs = [json.loads(t)["q"] for t in b]
                    assert qs == sorted(set(qs)), "batch out of order: %s" % qs
                    ob.ack(srv.batch(b))
                except MemoryError:
                    up = False
        finally:
            budget, Flaky.budget = Flaky.budget, None
        assert ob.held() == 0 and srv.ack == top, (fail_at, ob.held(), srv.ack, top)
        for q in range(1, 41):                 # held by the server: never declared dropped
            assert srv.at(q) == srv.STORED, (fail_at, q)
        assert srv.count(srv.DROPPED) <= ob.dropped <= srv.count(srv.DROPPED) + 1, fail_at
        return budget

    never = 10 ** 9
    ticks = never - run(never).n                # how many points there are to fail at
    assert ticks > 200, ticks
    hits = 0
    for fail_at in range(3, ticks, max(1, ticks // 48)):
        hits += run(fail_at).hit
    assert hits >= 45, (hits, ticks)



def test_memoryerror_declaring_a_dropped_reading():
    """A full RAM drops its oldest reading and declares it: a MemoryError at the declaration
    (a new gap) must leave the reading held, never gone without a gap (the server's ack
    stops below it until a reconnect's hello, and then counts it lost, not dropped)."""
    from outbox_model import Server
    for fail_at in range(1, 40):
        ob = Outbox(ram_bytes=1024)
        ob.gaps = Flaky(ob.gaps)
        srv = Server()
        ob.on_connect()
        ob.welcome(0)
        Flaky.budget = Budget(fail_at)
        try:
            while ob.next_seq <= 60:           # RAM full: the oldest are dropped, each
                try:                           # declared at once (a new gap each time)
                    ob.push(ob.next_seq, rd(ob.next_seq))
                except MemoryError:
                    pass
                for g in ob.pending_gaps():
                    srv.gap(*g)
        finally:
            budget, Flaky.budget = Flaky.budget, None
        assert budget.hit
        srv.batch(ob.next_batch(100, 100))
        assert srv.ack == 60, (fail_at, srv.ack)  # every seq stored or declared
        assert srv.count(srv.DROPPED) == ob.dropped


def test_memoryerror_declaring_a_dropped_head_segment(tmp_path):
    """A full flash drops the oldest head segment nobody holds (loaded, never sent) and
    declares it: a MemoryError at that declaration (a new gap) or anywhere in the flash
    queue's lists must leave it held or declared once, never gone without a gap, nor counted
    twice; the oldest still go first."""
    from outbox_model import Server, drain_to

    def run(fail_at):
        d = tmp_path / str(fail_at)
        ob = FlakyOutbox(ram_bytes=1024, flash_bytes=4096, store=DirStore(str(d)),
                         seg_bytes=512, seq_block=16)
        push_all(ob, 40)
        ob.spill(False)
        srv = Server()
        ob.on_connect()
        ob.welcome(0)
        ob.ack(srv.batch(ob.next_batch(3, 64)))  # 4-8 loaded, never sent; the link drops
        ob.gaps = Flaky(ob.gaps)
        Flaky.budget = Budget(fail_at)
        try:
            push_all(ob, 140)                    # the outage: the head goes first
        finally:
            budget, Flaky.budget = Flaky.budget, None
        drain_to(ob, srv)
        assert ob.held() == 0 and srv.ack == 140, (fail_at, ob.held(), srv.ack)
        assert srv.count(srv.DROPPED) == ob.dropped, (fail_at, srv.count(srv.DROPPED))
        assert srv.at(4) == srv.DROPPED, fail_at
        return budget

    never = 10 ** 9
    ticks = never - run(never).n                # how many points there are to fail at
    assert ticks >= 10, ticks
    for fail_at in range(1, ticks + 1):
        assert run(fail_at).hit
