# dual: runs on CPython and on MicroPython
"""Outbox: a segment dropped for room whose file cannot be removed (OSError at os.remove: a
flash error, or littlefs with no free block for the directory update). Its readings are
declared `gap dropped`; a later boot finds the file, and must neither send those readings
nor declare them again. Before, meta.json did not hold the gap when it went to the server
(drops are saved with the next seq mark), so after a power cut the file was loaded and its
readings sent under seqs the server had recorded as dropped, and the dropped count lost the
drop; with the gap saved, the readings were sent all the same (and counted in `held`)."""
import os

from dualsupport import rmtree, tmpdir
from outbox_model import Server, lcg

from fieldlink import proto
from fieldlink.outbox import DirStore, Outbox


def rd(q):
    return proto.reading(q, None, q * 100, "env.temperature", 20 + q % 7, "C")


class NoRemove(DirStore):
    """The outbox's store, where removing a segment file fails (EIO) while `armed`."""

    def __init__(self, path):
        DirStore.__init__(self, path)
        self.armed = False
        self.failed = 0

    def remove(self, name):
        if self.armed and name[:1] == "s":
            self.failed += 1
            return False
        return DirStore.remove(self, name)


def new(d, st=None):
    # seq_block 64: no seq mark is saved between the first push and the power cut
    return Outbox(ram_bytes=1024, flash_bytes=2048, store=st or NoRemove(d), seg_bytes=512,
                  seq_block=64)


def outage_with_failing_removes(d, n, ob=None):
    """The link down, n readings made, every segment dropped for room left on flash. The
    outbox and its store, still armed."""
    ob = ob or new(d)
    nr = ob.store
    nr.armed = True
    for _ in range(n):
        ob.push(ob.next_seq, rd(ob.next_seq))
    assert ob.dropped > 0 and nr.failed > 0, (ob.dropped, nr.failed)
    return ob, nr


def drain_recording(ob, srv):
    """A good link until the outbox is empty; every seq sent must not be declared already
    (stored or dropped: a resend of a stored one is harmless, of a dropped one a lie)."""
    ob.on_connect()
    ob.welcome(srv.ack)
    for _ in range(1000):
        for g in ob.pending_gaps():
            srv.gap(*g)
        b = ob.next_batch(20, 64)
        if not b:
            break
        for t in b:
            q = proto.reading_seq(t.encode())
            assert srv.at(q) != srv.DROPPED, ("sent after its gap dropped", q)
        ob.ack(srv.batch(b))


def check_after_boot(ob, srv, top):
    drain_recording(ob, srv)
    assert ob.held() == 0 and srv.ack == ob.next_seq - 1
    for q in range(1, top + 1):
        assert srv.at(q), q                             # stored or declared
    assert srv.count(srv.DROPPED) == ob.dropped, (srv.count(srv.DROPPED), ob.dropped)


def test_a_gap_sent_before_a_power_cut_is_not_undone_by_the_file_left():
    # 1-8 sent and lost with the link (the server's ack stays at 0); an outage drops 9 on
    # (1-8 may be on the server: kept); at the reconnect the drop's gap goes first, then a
    # power cut before any seq mark is saved. Before: boot loaded the file left and sent
    # 9-15 above the server's ack, under seqs it had recorded as dropped.
    d = tmpdir()
    try:
        ob = new(d)
        for _ in range(8):
            ob.push(ob.next_seq, rd(ob.next_seq))
        ob.on_connect()
        ob.welcome(0)
        assert len(ob.next_batch(8, 64)) == 8           # lost on the way, the link drops
        ob, nr = outage_with_failing_removes(d, 52, ob)
        top = ob.next_seq - 1
        srv = Server()
        ob.on_connect()
        ob.welcome(0)
        gaps = ob.pending_gaps()
        assert gaps and gaps[0][:1] == (9,), gaps
        for g in gaps:
            srv.gap(*g)
        ob = None                                       # a power cut
        nr.armed = False
        ob = new(d, nr)
        check_after_boot(ob, srv, top)
    finally:
        rmtree(d)


def test_a_saved_gap_and_the_file_left_are_not_sent_twice():
    # The gap is on flash (a spill saved meta.json), a power cut, then boot.
    d = tmpdir()
    try:
        ob, nr = outage_with_failing_removes(d, 60)
        ob.spill(False)                                 # (saves meta.json with the drops)
        dropped = ob.dropped
        top = ob.next_seq - 1
        ob = None                                       # a power cut
        nr.armed = False
        ob = new(d, nr)
        assert ob.dropped == dropped
        assert ob.held() + dropped == top, (ob.held(), dropped, top)
        srv = Server()
        check_after_boot(ob, srv, top)
        assert [n for n in os.listdir(d) if n[:1] == "s"] == []
    finally:
        rmtree(d)


def test_a_file_that_will_not_go_at_boot_either_is_never_sent_nor_declared_again():
    # The removal fails at boot too: the file stays, is listed, and must be skipped when it
    # is loaded or picked to be dropped again (a second `gap dropped`: counted twice).
    d = tmpdir()
    try:
        ob, nr = outage_with_failing_removes(d, 60)
        ob.spill(False)
        ob = None                                       # a power cut, the flash still failing
        ob = new(d, nr)
        for _ in range(60):                             # the outage goes on: more drops
            ob.push(ob.next_seq, rd(ob.next_seq))
        top = ob.next_seq - 1
        nr.armed = False
        srv = Server()
        check_after_boot(ob, srv, top)
    finally:
        rmtree(d)


def campaign_with_failing_removes(seed, steps):
    """Random pushes, sends (a batch lost with its connection), acks (some lost), link
    drops, spills and power cuts, with the store's removal failing for segment files 30% of the time
    (a step at a time), against the model server; then a good link drains everything."""
    rand = lcg(seed)
    d = tmpdir()
    nr = NoRemove(d)
    try:
        def boot():
            return Outbox(ram_bytes=1200, flash_bytes=3000, store=nr, seg_bytes=300,
                          seq_block=30)
        srv = Server()
        ob = boot()
        up = False
        for _ in range(steps):
            nr.armed = rand(100) < 30
            op = rand(100)
            if op < 55:
                ob.push(ob.next_seq, rd(ob.next_seq))
            elif op < 72 and up:
                for g in ob.pending_gaps():
                    srv.gap(*g)
                b = ob.next_batch(1 + rand(6), 1 + rand(30))
                if rand(6):
                    a = srv.batch(b)            # (fails on a seq sent after its gap
                    if rand(3):                 # dropped reached the server, if not acked)
                        ob.ack(a)               # the ack may be lost on the way
                else:
                    up = False                  # the batch is lost with the connection
            elif op < 80:
                up = not up
                if up:
                    ob.on_connect()
                    ob.welcome(srv.ack)
            elif op < 84:
                ob.spill(True)
            elif op < 86:
                ob = None                       # a power cut
                ob = boot()
                up = False
        nr.armed = False
        drain_recording(ob, srv)
        assert ob.held() == 0 and srv.ack == ob.next_seq - 1, (seed, ob.held(), srv.ack)
        assert nr.failed > 0
    finally:
        rmtree(d)


def test_random_campaign_with_failing_removes_and_power_cuts():
    # Before: 18 of seeds 1-40 failed (the model server saw a seq sent after its `gap
    # dropped`), these three among them; now none.
    for seed in (4, 5, 7):
        campaign_with_failing_removes(seed, 3000)
