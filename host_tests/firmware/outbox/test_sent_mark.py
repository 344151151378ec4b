# dual: runs on CPython and on MicroPython
"""Outbox: after a power cut, until the first welcome, the outbox knows from the sent mark
(meta.json "sent", written a block ahead before a batch goes past it) which flash segments
were never sent. When an outage then fills the flash it drops the oldest of those first, as
before the power cut, and a `gap dropped` never covers a seq the server may hold. Before, it
kept every segment from before the reboot (any might have been on the server) and dropped the
readings made after the reboot instead, all but the newest few in RAM."""
import json
import os

from dualsupport import rmtree, tmpdir
from outbox_model import Server, drain_to, flash_side, flash_used

from fieldlink import proto
from fieldlink.outbox import DirStore, Outbox


def rd(q):
    return proto.reading(q, None, q * 100, "env.temperature", 20 + q % 7, "C")


class Listings(DirStore):
    """The outbox's store, counting its directory listings in calls[0]."""

    def __init__(self, path):
        DirStore.__init__(self, path)
        self.calls = [0]

    def entries(self):
        self.calls[0] += 1
        return DirStore.entries(self)


def new(d):
    return Outbox(ram_bytes=1024, flash_bytes=8192, store=DirStore(d), seg_bytes=512,
                  seq_block=16)


def push(ob, n):
    for _ in range(n):
        ob.push(ob.next_seq, rd(ob.next_seq))


def test_after_a_power_cut_a_long_outage_drops_the_oldest_unsent_first():
    d = tmpdir()
    try:
        ob = new(d)
        srv = Server()
        ob.on_connect()
        ob.welcome(0)
        push(ob, 30)
        srv.batch(ob.next_batch(20, 64))  # 1-20 stored; the ack is lost, the link drops
        push(ob, 10)                      # the outage begins: RAM spills, flash has room
        ob.spill(False)
        assert ob.dropped == 0
        ob = None                         # a power cut during the outage
        ob = new(d)
        push(ob, 300)                     # the outage goes on: the flash fills up
        assert ob.dropped > 0
        top = ob.next_seq - 1
        drain_to(ob, srv)                 # the link is back
        # (the model server fails any `gap dropped` over a seq it stored)
        assert ob.held() == 0 and srv.ack == top
        assert srv.count(srv.DROPPED) == ob.dropped
        # the newest readings made it (a flash's worth, less what stays below the sent
        # mark), not only the few RAM holds (~12 here)
        newest = [q for q in range(top - 49, top + 1) if srv.at(q) == srv.STORED]
        assert len(newest) == 50, (len(newest), ob.dropped)
        # what the server may hold (up to the sent mark) was kept, never declared dropped;
        # the oldest unsent readings above it were the first to go
        for q in range(1, 21):
            assert srv.at(q) == srv.STORED, q
        assert srv.at(40) == srv.DROPPED
    finally:
        rmtree(d)


def test_small_segments_below_the_sent_mark_beyond_the_table_are_kept():
    # Segments of one reading each: the sent mark covers more segments than the table lists
    # (16), so some at or below it are only counted. A full flash after the power cut must
    # not drop those (the server holds 17-30) but the oldest above the mark (41 on).
    d = tmpdir()
    try:
        def new1():
            return Outbox(ram_bytes=1024, flash_bytes=4096, store=DirStore(d), seg_bytes=100,
                          seq_block=16)
        ob = new1()
        srv = Server()
        push(ob, 40)
        ob.spill(False)                   # link down: 40 segments on flash
        assert flash_side(ob)._sq > 0                 # (more than the table lists)
        ob.on_connect()
        ob.welcome(0)
        srv.batch(ob.next_batch(30, 64))  # 1-30 stored, the ack is lost, the link drops
        ob = None                         # a power cut
        ob = new1()
        first = ob.next_seq               # (41 up to here: declared `gap reboot`)
        push(ob, 100)                     # the outage goes on: the flash fills up
        assert ob.dropped > 0
        top = ob.next_seq - 1
        drain_to(ob, srv)                 # (the model server fails a `gap dropped` over 1-30)
        assert ob.held() == 0 and srv.ack == top
        assert srv.count(srv.DROPPED) == ob.dropped
        for q in range(1, 41):            # at or below the sent mark (46): kept, and
            # never declared dropped
            assert srv.at(q) == srv.STORED, q
        assert srv.at(first) == srv.DROPPED  # the oldest above it went first
        for q in range(top - 9, top + 1):
            assert srv.at(q) == srv.STORED, q
    finally:
        rmtree(d)


def pinned_after_reboot(d, limit):
    """60 one-reading segments, then a reboot on a meta.json from firmware before the sent
    mark: all may be on the server (more than the 16 listed). The flash limit after it:
    `limit(bytes used)`. The outbox, counting its directory listings in calls[0]."""
    ob = Outbox(ram_bytes=1024, flash_bytes=4096, store=DirStore(d), seg_bytes=100)
    push(ob, 60)
    ob.flush()  # one reading a segment, all on flash
    used = flash_used(ob)
    ob = None
    with open(d + "/meta.json") as f:
        meta = json.loads(f.read())
    del meta["sent"]
    with open(d + "/meta.json", "w") as f:
        f.write(json.dumps(meta))
    st = Listings(d)
    ob = Outbox(ram_bytes=1024, flash_bytes=limit(used), store=st, seg_bytes=100)
    assert ob.held() == 60
    st.calls[0] = 0  # (boot's own listings not counted)
    return ob, st.calls


def test_nothing_droppable_on_a_full_flash_is_not_listed_again_at_every_push():
    # No room for one more segment and nothing droppable: each push asks for a segment to
    # drop. The directory is listed once for that, not once per push (600 files on an
    # ESP32's flash take long to list).
    d = tmpdir()
    try:
        ob, calls = pinned_after_reboot(d, lambda used: used)
        push(ob, 100)
        assert ob.dropped > 0 and calls[0] <= 3, calls
        srv = Server()
        drain_to(ob, srv)
        assert srv.ack == ob.next_seq - 1 and srv.count(srv.DROPPED) == ob.dropped
    finally:
        rmtree(d)


def test_drops_beyond_the_table_list_the_flash_once_per_16():
    # Room for a few more segments: every push spills one and then must drop the oldest
    # one above the mark, which is not listed (the 16 listed are all pinned). They are
    # listed 16 at a time, not once per push; the oldest still go first.
    d = tmpdir()
    try:
        ob, calls = pinned_after_reboot(d, lambda used: used + 400)
        first = ob.next_seq
        push(ob, 100)
        assert ob.dropped > 50 and calls[0] <= 100 // 16 + 4, (calls, ob.dropped)
        srv = Server()
        drain_to(ob, srv)
        assert srv.ack == ob.next_seq - 1 and srv.count(srv.DROPPED) == ob.dropped
        assert srv.at(first) == srv.DROPPED and srv.at(ob.next_seq - 1) == srv.STORED
        for q in range(1, 61):
            assert srv.at(q) == srv.STORED, q
    finally:
        rmtree(d)


def test_an_unreadable_segment_with_holes_dropped_for_room_is_declared():
    # A segment with holes (readings dropped from RAM before the spill, already declared) is
    # dropped seq by seq as read from its file; when the file does not read, its whole range
    # is declared `gap reboot` (before: nothing, and the server's ack stopped below it).
    d = tmpdir()
    try:
        with open(d + "/epoch", "w") as f:
            f.write("0123456789abcdef")
        with open(d + "/s0000000001_0000000010_5", "w") as f:
            f.write("not a reading\n" * 5)  # holes 2, 4, 6, 8, 10 (declared below)
        gaps = [[q, q, "dropped"] for q in (2, 4, 6, 8, 10)]
        with open(d + "/meta.json", "w") as f:
            f.write(json.dumps({"v": 2, "boot": 1, "mark": 11, "dropped": 5, "acked": 0,
                                "sent": 0, "gaps": gaps}))
        ob = Outbox(ram_bytes=1024, flash_bytes=200, store=DirStore(d), seg_bytes=100)
        push(ob, 30)  # RAM full: a spill needs room, the segment goes
        assert "s0000000001_0000000010_5" not in os.listdir(d)
        srv = Server()
        drain_to(ob, srv)
        assert srv.ack == ob.next_seq - 1, (srv.ack, ob.next_seq)
        assert [srv.at(q) for q in (1, 3, 5, 7, 9)] == [srv.REBOOT] * 5
    finally:
        rmtree(d)
