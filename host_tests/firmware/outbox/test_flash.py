# dual: runs on CPython and on MicroPython
"""Outbox on flash: RAM spilled in segments and sent in order, reloaded after a power cut or a
clean reboot, a full flash dropping the oldest segment (counted, persisted), corrupt
segments declared, write errors falling back to counted drops, and the flash side's code on
the heap only while the flash holds readings."""
import json
import os
import sys

from dualsupport import rmtree, tmpdir
from outbox_model import Server, batch_text, drain_to, fill, flash_used, seqs

from fieldlink.outbox import DirStore, Outbox


def test_spill_to_flash_in_batched_segments_and_send_in_order():
    d = tmpdir()
    try:
        ob = Outbox(ram_bytes=1024, flash_bytes=32768, store=DirStore(d), seg_bytes=512)
        fill(ob, 200)
        assert ob.ring.used <= 1024 and flash_used(ob) <= 32768
        assert ob.dropped == 0 and ob.held() == 200
        segs = [n for n in os.listdir(d) if n.startswith("s")]
        assert len(segs) == ob.spills and 10 < len(segs) < 60   # batched, not per reading
        for n in segs:
            assert os.stat(d + "/" + n)[6] <= 512 + 200
        ob.on_connect()
        ob.welcome(0)
        got = []
        while True:
            b = ob.next_batch(20, 64)
            if not b:
                break
            got += seqs(b)
            ob.ack(got[-1])
        assert got == list(range(1, 201))
        assert ob.held() == 0 and flash_used(ob) == 0
        assert [n for n in os.listdir(d) if n.startswith("s")] == []
    finally:
        rmtree(d)


def test_spill_while_sending_keeps_order():
    d = tmpdir()
    try:
        ob = Outbox(ram_bytes=1024, flash_bytes=32768, store=DirStore(d), seg_bytes=400)
        ob.welcome(0)
        fill(ob, 5)
        got = seqs(ob.next_batch(3, 64))              # 1-3 in flight from RAM
        fill(ob, 60)                                  # RAM overflows: in-flight chunk spills
        while True:
            b = ob.next_batch(7, 64)
            if not b:
                break
            got += seqs(b)
            ob.ack(got[-1])
        assert got == list(range(1, 66))
        assert flash_used(ob) == 0 and ob.dropped == 0
    finally:
        rmtree(d)


def test_reload_after_power_cut_declares_reboot_gap():
    d = tmpdir()
    try:
        ob = Outbox(ram_bytes=1024, flash_bytes=32768, store=DirStore(d), seg_bytes=512,
                    seq_block=50)
        fill(ob, 120)                                  # some on flash, the newest in RAM
        on_flash = ob.held() - ob.ring.n
        assert on_flash > 0
        boot = ob.boot
        ob = None                                      # power cut: RAM is gone
        ob2 = Outbox(ram_bytes=1024, flash_bytes=32768, store=DirStore(d), seg_bytes=512,
                     seq_block=50)
        assert ob2.boot == boot + 1
        assert ob2.held() == on_flash
        assert ob2.next_seq > 120                      # never reuses a seq
        gaps = ob2.pending_gaps()
        assert gaps == [(on_flash + 1, ob2.next_seq - 1, "reboot")]
        srv = Server()
        drain_to(ob2, srv)  # (the reboot gap goes first)
        assert srv.ack == ob2.next_seq - 1 and ob2.held() == 0
        for q in range(1, on_flash + 1):
            assert srv.state[q] == srv.STORED
        assert srv.count(srv.STORED) == on_flash
    finally:
        rmtree(d)


def test_clean_reboot_after_flush_has_no_gap():
    d = tmpdir()
    try:
        ob = Outbox(ram_bytes=2048, flash_bytes=32768, store=DirStore(d))
        fill(ob, 30)
        ob.flush()
        ob2 = Outbox(ram_bytes=2048, flash_bytes=32768, store=DirStore(d))
        assert ob2.pending_gaps() == []
        assert ob2.held() == 30 and ob2.next_seq == 31
        ob2.welcome(10)                                # server already had 1-10
        assert seqs(ob2.next_batch(64, 64)) == list(range(11, 31))
    finally:
        rmtree(d)


def test_flash_full_drops_oldest_segment_counted_and_persisted():
    d = tmpdir()
    try:
        ob = Outbox(ram_bytes=1024, flash_bytes=4096, store=DirStore(d), seg_bytes=512)
        ob.welcome(0)
        fill(ob, 300)
        assert flash_used(ob) <= 4096 and ob.ring.used <= 1024
        assert ob.dropped > 0 and ob.held() + ob.dropped == 300
        gaps = ob.pending_gaps()
        assert gaps[0][0] == 1 and gaps[0][2] == "dropped"
        assert sum(g[1] - g[0] + 1 for g in gaps) == ob.dropped
        ob.flush()                                     # may drop more to make room
        dropped = ob.dropped
        gaps = [tuple(g[:3]) for g in ob.gaps]
        ob2 = Outbox(ram_bytes=1024, flash_bytes=4096, store=DirStore(d), seg_bytes=512)
        assert ob2.dropped == dropped                  # the count survives a reboot
        merged = []                                    # adjacent gaps are kept merged
        for g in gaps:
            if merged and merged[-1][2] == g[2] and merged[-1][1] + 1 == g[0]:
                merged[-1] = (merged[-1][0], g[1], g[2])
            else:
                merged.append(g)
        assert ob2.pending_gaps() == merged            # and so does the declaration
        assert ob2.held() + dropped == 300
    finally:
        rmtree(d)


def test_corrupt_segment_is_declared_not_silently_lost():
    d = tmpdir()
    try:
        ob = Outbox(ram_bytes=1024, flash_bytes=32768, store=DirStore(d), seg_bytes=512)
        fill(ob, 40)
        ob.flush()
        name = sorted(n for n in os.listdir(d) if n.startswith("s"))[0]
        with open(d + "/" + name, "w") as f:
            f.write("garbage\n")
        ob2 = Outbox(ram_bytes=1024, flash_bytes=32768, store=DirStore(d), seg_bytes=512)
        ob2.welcome(0)
        sent = []
        while True:
            b = ob2.next_batch(20, 64)
            if not b:
                break
            sent += seqs(b)
        covered = set(sent)
        for g in ob2.pending_gaps():
            for q in range(g[0], g[1] + 1):
                covered.add(q)
        assert sorted(covered) == list(range(1, 41))
    finally:
        rmtree(d)


class CountingStore(DirStore):
    metas = 0

    def put(self, name, text):
        if name == "meta.json":
            self.metas += 1
        DirStore.put(self, name, text)


def test_dropping_segments_does_not_rewrite_meta_each_time():
    d = tmpdir()
    try:
        st = CountingStore(d)
        ob = Outbox(ram_bytes=1024, flash_bytes=2048, store=st, seg_bytes=256, seq_block=256)
        st.metas = 0
        fill(ob, 1000)                                  # link down: flash full, drops
        assert ob.spills >= 50 and ob.dropped > 500     # a segment dropped per write
        assert st.metas <= 1000 // 256 + 1, st.metas    # only the seq marks
        assert len(ob.gaps) <= 2                        # adjacent drops are one gap
        st.metas = 0
        ob.spill(False)                                 # a spill cycle that drops: one write
        assert st.metas == 1
    finally:
        rmtree(d)


def test_segments_dropped_before_a_power_cut_are_declared_at_boot():
    d = tmpdir()
    try:
        ob = Outbox(ram_bytes=1024, flash_bytes=2048, store=DirStore(d), seg_bytes=256,
                    seq_block=1000)
        fill(ob, 300)                                   # drops since the last meta write
        assert ob.dropped > 0
        ob = None                                       # power cut: the drops were not saved
        ob2 = Outbox(ram_bytes=1024, flash_bytes=2048, store=DirStore(d), seg_bytes=256,
                     seq_block=1000)
        gaps = ob2.pending_gaps()
        assert gaps and gaps[0][0] == 1 and gaps[0][2] == "reboot", gaps
        srv = Server()
        drain_to(ob2, srv)  # (the reboot gap goes first)
        # nothing silently missing: the server's ack reaches everything produced
        assert srv.ack == ob2.next_seq - 1 and ob2.held() == 0
        assert srv.count(srv.STORED) > 0
    finally:
        rmtree(d)


class _FullStore(DirStore):
    """The filesystem is full (smaller than outbox_flash_bytes says): every segment write
    fails with OSError (ENOSPC)."""

    def file(self, name, mode="r"):
        if name.startswith("s") and "w" in mode:
            raise OSError(28)
        return DirStore.file(self, name, mode)


def test_flash_write_errors_fall_back_to_counted_drops():
    # A push must not raise: in the app that ends the sampler, and the board resets with
    # everything in RAM, again and again while the link is down.
    d = tmpdir()
    try:
        ob = Outbox(ram_bytes=1024, flash_bytes=32768, store=_FullStore(d), seg_bytes=256)
        ob.welcome(0)
        fill(ob, 100)
        assert ob.dropped > 0 and ob.held() + ob.dropped == 100
        assert ob.ring.used <= 1024
        assert ob.spill() is False                       # says it could not, does not raise
        ob.ack(ob.next_seq - 1)                          # nothing on flash: code dropped
        assert ob.held() == 0 and not flash_code_loaded()
    finally:
        rmtree(d)


# ---- the flash side is code on the heap only while it is needed ----

def flash_code_loaded():
    return "fieldlink.outbox.flash" in sys.modules


def batch_texts(ob, max_n, window):
    """What the app sends (next_batch_view), split back into reading texts."""
    return [json.dumps(r) for r in json.loads("[" + batch_text(ob, max_n, window) + "]")]


def drain(ob, srv):
    """A good link until the outbox is empty (srv: Server/SparseServer), sent the way the app
    sends."""
    drain_to(ob, srv, lambda ob: batch_texts(ob, 20, 64))


def test_flash_code_is_loaded_only_while_the_flash_holds_readings():
    d = tmpdir()
    try:
        ob = Outbox(ram_bytes=1024, flash_bytes=32768, store=DirStore(d), seg_bytes=512,
                    seq_block=16)
        assert not flash_code_loaded()                 # booted, nothing on flash
        assert "fieldlink.outbox.boot" not in sys.modules   # boot recovery: dropped
        srv = Server()
        ob.welcome(0)
        for _ in range(5):                             # streaming as the app does: meta
            fill(ob, 10)                               # written, nothing spilled
            ob.ack(srv.batch(batch_texts(ob, 20, 64)))
        assert not flash_code_loaded() and ob.held() == 0
        assert ob.spill(True) is True and not flash_code_loaded()   # nothing to spill
        fill(ob, 60)                                   # link down: RAM overflows to flash
        assert ob.spills > 0 and flash_code_loaded()
        on_flash = ob.held() - ob.ring.n
        ob = None                                      # power cut
        ob = Outbox(ram_bytes=1024, flash_bytes=32768, store=DirStore(d), seg_bytes=512,
                    seq_block=16)
        assert flash_code_loaded() and ob.held() == on_flash   # segments found at boot
        drain(ob, srv)
        assert ob.held() == 0 and flash_used(ob) == 0 and not flash_code_loaded()
        assert srv.ack == ob.next_seq - 1
    finally:
        rmtree(d)
