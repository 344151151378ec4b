# dual: runs on CPython and on MicroPython
"""Outbox on a full filesystem (OSError ENOSPC on every write: the flash is smaller than
outbox_flash_bytes says, or full of other files). A push must not raise (in the app that ends
the sampler and resets the board), nor must boot: the seq mark's write failing at boot made a
reset loop that never sent anything. Nothing is sent past what meta.json's marks allow while
they cannot be saved: not above the seq mark (a power cut would reuse those seqs: the server
would drop the new readings as duplicates), nor above the sent mark (after a power cut the
outbox could drop, as never sent, readings the server holds); the oldest readings are dropped
and counted. Once there is room again, all goes on."""
import json

from dualsupport import rmtree, tmpdir
from outbox_model import FullFS, Server, drain_to

from fieldlink import proto
from fieldlink.outbox import Outbox


def rd(q):
    return proto.reading(q, None, 100, "env.temperature", 20 + q % 7, "C")


def new(d):
    return Outbox(ram_bytes=1024, flash_bytes=32768, store=FullFS(d), seg_bytes=256,
                  seq_block=50)


def test_pushes_on_a_full_filesystem_never_raise_and_resume_with_room():
    d = tmpdir()
    try:
        ob = new(d)
        srv = Server()
        ob.push(1, rd(1))
        drain_to(ob, srv)  # one reading sent: the sent mark is saved a block ahead
        with open(d + "/meta.json") as f:
            meta = json.loads(f.read())
        limit = min(meta["mark"], meta["sent"] + 1)  # neither mark can move while full
        assert limit > 2
        ob.store.full = True
        sent = 0
        for _ in range(300):  # the link is up, the flash is full
            ob.push(ob.next_seq, rd(ob.next_seq))
            b = ob.next_batch(20, 64)
            for t in b:
                assert json.loads(t)["q"] < limit, (t, limit)
            sent += len(b)
            ob.ack(srv.batch(b))
        assert 0 < sent < limit
        assert ob.dropped > 0 and ob.held() + ob.dropped + sent == 300
        ob.store.full = False  # room again (files removed)
        ob.push(ob.next_seq, rd(ob.next_seq))
        drain_to(ob, srv)
        assert ob.held() == 0 and srv.ack == ob.next_seq - 1 == 302
        assert 0 < srv.count(srv.DROPPED) == ob.dropped
    finally:
        rmtree(d)


def test_boot_on_a_full_filesystem_keeps_the_numbering():
    d = tmpdir()
    try:
        ob = new(d)
        for _ in range(120):  # some on flash, with meta.json and the epoch
            ob.push(ob.next_seq, rd(ob.next_seq))
        ob.flush()
        top = ob.next_seq - 1
        epoch = ob.epoch
        ob = None
        st = FullFS(d)
        st.full = True
        ob = Outbox(ram_bytes=1024, flash_bytes=32768, store=st, seg_bytes=256, seq_block=50)
        assert ob.epoch == epoch and ob.held() == 120 and ob.next_seq == top + 1
        for _ in range(40):
            ob.push(ob.next_seq, rd(ob.next_seq))
        assert ob.next_batch(20, 64) == []  # the new mark is not saved: nothing goes
        st.full = False
        srv = Server()
        drain_to(ob, srv)
        assert ob.held() == 0 and srv.ack == ob.next_seq - 1
        assert [srv.at(q) for q in range(1, 121)] == [srv.STORED] * 120
        ob = None  # a power cut now: the numbering goes on above everything used
        ob = new(d)
        assert ob.next_seq > top + 40
    finally:
        rmtree(d)


def test_first_boot_on_a_full_filesystem_runs_from_ram_a_new_epoch_each_boot():
    # No state yet and the epoch file cannot be written: nothing can be kept on this flash.
    # Before: OSError out of boot (a reset loop). Now the outbox runs from RAM, which makes
    # every boot a new numbering the server tells apart (no seq is ever reused).
    d = tmpdir()
    try:
        st = FullFS(d)
        st.full = True
        ob = Outbox(ram_bytes=1024, flash_bytes=32768, store=st, seg_bytes=256, seq_block=50)
        assert ob.notice and "RAM only" in ob.notice, ob.notice
        for _ in range(30):
            ob.push(ob.next_seq, rd(ob.next_seq))
        srv = Server()
        drain_to(ob, srv)
        assert srv.ack == 30 and ob.held() == 0
        first = ob.epoch
        ob = None  # a power cut, the flash still full
        ob = Outbox(ram_bytes=1024, flash_bytes=32768, store=st, seg_bytes=256, seq_block=50)
        assert ob.epoch != first and ob.next_seq == 1
        st.full = False  # room at the next boot: the flash is used again
        ob = None
        ob = Outbox(ram_bytes=1024, flash_bytes=32768, store=st, seg_bytes=256, seq_block=50)
        assert ob.notice is None and ob.store is st
    finally:
        rmtree(d)


def test_no_gap_past_the_saved_mark_goes_while_full():
    # The seqs above the saved seq mark are used again after a power cut: a `gap dropped`
    # over them must not reach the server either (it would drop the new readings under
    # those seqs, which the outbox then counts as delivered: lost without a word).
    d = tmpdir()
    try:
        ob = new(d)
        srv = Server()
        ob.push(1, rd(1))
        drain_to(ob, srv)
        ob.store.full = True
        for _ in range(120):  # the link down, RAM full, no room on flash: the oldest dropped
            ob.push(ob.next_seq, rd(ob.next_seq))
        assert ob.dropped > 0
        with open(d + "/meta.json") as f:
            mark = json.loads(f.read())["mark"]
        ob.on_connect()
        ob.welcome(srv.ack)
        for g in ob.pending_gaps():
            assert g[1] < mark, (g, mark)
            srv.gap(*g)
        ob = None  # a power cut, the flash still full: the numbering goes on from the mark
        ob = new(d)
        assert ob.next_seq == mark
        ob.store.full = False
        for _ in range(10):
            ob.push(ob.next_seq, rd(ob.next_seq))
        top = ob.next_seq - 1
        drain_to(ob, srv)  # (the model server fails a reading sent under a dropped seq)
        assert ob.held() == 0 and srv.ack == top
        for q in range(mark, top + 1):
            assert srv.at(q) == srv.STORED, q
    finally:
        rmtree(d)
