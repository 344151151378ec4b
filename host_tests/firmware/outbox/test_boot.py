# dual: runs on CPython and on MicroPython
"""Outbox boot recovery: the epoch (made once for new state, kept across boots, a new one when
the state it named is gone), meta.json written whole (a power cut mid-write or between
remove and rename), the marks saved before anything above them is sent, and a corrupt or
lost meta.json that keeps the epoch and the segments and never reuses a seq."""
import json
import os

from dualsupport import rmtree, tmpdir
from outbox_model import Server, batch_text, drain_to, fill, rd, seq_of, seqs

from fieldlink.outbox import DirStore, Outbox


# ---- epochs (docs/protocol.md "Epochs") ----

def counter_urandom(start):
    """A deterministic os.urandom stand-in: 8 bytes counting up from start."""
    state = [start]

    def urandom(n):
        state[0] += 1
        return bytes([(state[0] >> (8 * (n - 1 - i))) & 0xFF for i in range(n)])
    return urandom


def read_file(path):
    with open(path) as f:
        return f.read()


def test_epoch_is_made_once_for_new_state_and_kept_across_boots():
    d = tmpdir()
    try:
        ob = Outbox(ram_bytes=1024, flash_bytes=8192, store=DirStore(d), seg_bytes=512,
                    seq_block=20)
        e = ob.epoch
        assert len(e) == 16 and int(e, 16) >= 0 and e == e.lower()
        assert ob.notice is None
        assert read_file(d + "/epoch") == e            # its own file, not meta.json
        assert "epoch" not in read_file(d + "/meta.json")
        fill(ob, 100)                                  # spills, meta rewritten many times
        assert ob.spills > 0
        assert read_file(d + "/epoch") == e
        ob = None                                      # power cut
        ob2 = Outbox(ram_bytes=1024, flash_bytes=8192, store=DirStore(d), seg_bytes=512,
                     seq_block=20, urandom=counter_urandom(99))
        assert ob2.epoch == e and ob2.notice is None   # the same numbering continues
        assert ob2.next_seq > 100 and ob2.held() > 0
    finally:
        rmtree(d)


def test_epoch_from_urandom_and_new_one_per_wipe():
    d = tmpdir()
    try:
        ob = Outbox(ram_bytes=1024, flash_bytes=8192, store=DirStore(d),
                    urandom=counter_urandom(0))
        assert ob.epoch == "0000000000000001"
        fill(ob, 10)
        ob.flush()
        rmtree(d)                                      # reflash: the flash is erased
        os.mkdir(d)
        ob2 = Outbox(ram_bytes=1024, flash_bytes=8192, store=DirStore(d),
                     urandom=counter_urandom(0x0102))
        assert ob2.epoch == "0000000000000103" and ob2.next_seq == 1 and ob2.boot == 1
        assert ob2.notice is None                      # nothing there: nothing to warn about
    finally:
        rmtree(d)


def test_ram_only_outbox_has_a_new_epoch_every_boot():
    # nothing persists, so every boot restarts the numbering at 1: a new epoch each time
    a = Outbox(ram_bytes=1024, urandom=counter_urandom(5))
    b = Outbox(ram_bytes=1024, urandom=counter_urandom(6))
    assert a.next_seq == b.next_seq == 1
    assert a.epoch != b.epoch and len(a.epoch) == 16
    assert len(Outbox(ram_bytes=1024).epoch) == 16      # os.urandom by default


def write_file(path, text):
    with open(path, "w") as f:
        f.write(text)


def segment_names(d):
    return [n for n in os.listdir(d) if n.startswith("s")]


def write_pre_epoch_state(d):
    """What firmware before epochs left on flash: meta v1 and a segment, no epoch file."""
    write_file(d + "/s0000000041_0000000043_3", "".join(rd(q) + "\n" for q in (41, 42, 43)))
    write_file(d + "/meta.json", json.dumps({"v": 1, "boot": 4, "mark": 300, "dropped": 2,
                                             "acked": 40, "gaps": []}))


def test_pre_epoch_state_gets_an_epoch_and_keeps_its_numbering():
    d = tmpdir()
    try:
        write_pre_epoch_state(d)
        ob = Outbox(ram_bytes=1024, flash_bytes=8192, store=DirStore(d),
                    urandom=counter_urandom(7))
        assert ob.epoch == "0000000000000008" and ob.notice is None
        assert read_file(d + "/epoch") == ob.epoch
        assert ob.boot == 5 and ob.next_seq == 300 and ob.dropped == 2
        assert ob.held() == 3 and ob.first() == 41
        assert seqs(ob.next_batch(10, 64)) == [41, 42, 43]
        ob = None
        ob2 = Outbox(ram_bytes=1024, flash_bytes=8192, store=DirStore(d),
                     urandom=counter_urandom(70))
        assert ob2.epoch == "0000000000000008"         # written once, then only read
    finally:
        rmtree(d)


def check_state_discarded(d, why):
    ob = Outbox(ram_bytes=1024, flash_bytes=8192, store=DirStore(d),
                urandom=counter_urandom(0x33))
    assert ob.epoch == "0000000000000034"
    assert ob.notice is not None and why in ob.notice and "1 flash segments" in ob.notice
    # the old segments belong to a numbering nobody can name: gone, and nothing declared
    assert ob.held() == 0 and ob.next_seq == 1 and ob.boot == 1 and ob.dropped == 0
    assert ob.pending_gaps() == [] and segment_names(d) == []
    assert read_file(d + "/epoch") == ob.epoch
    ob2 = Outbox(ram_bytes=1024, flash_bytes=8192, store=DirStore(d))
    assert ob2.epoch == ob.epoch and ob2.notice is None


def test_lost_epoch_file_discards_the_state_it_named():
    d = tmpdir()
    try:
        ob = Outbox(ram_bytes=1024, flash_bytes=8192, store=DirStore(d), seg_bytes=512)
        fill(ob, 5)
        ob.flush()                                     # one segment, meta v2
        assert len(segment_names(d)) == 1
        os.remove(d + "/epoch")
        check_state_discarded(d, "lost")
    finally:
        rmtree(d)


def test_corrupt_epoch_file_discards_the_state():
    d = tmpdir()
    try:
        write_pre_epoch_state(d)
        with open(d + "/epoch", "w") as f:
            f.write("not an epoch!")
        check_state_discarded(d, "corrupt")
    finally:
        rmtree(d)


# ---- flash wear: drops are persisted with the seq mark, holes recovered at boot ----


def test_power_cut_between_remove_and_rename_of_meta_keeps_the_numbering():
    # On FAT rename does not replace, so DirStore.put removes meta.json and then renames
    # meta.json.tmp. A power cut in between leaves only the (complete) tmp file. If boot
    # threw it away, the numbering would restart at 1 in the same epoch: new readings would
    # reuse seqs the server already stored and be acked away unsent.
    d = tmpdir()
    try:
        ob = Outbox(ram_bytes=2048, flash_bytes=32768, store=DirStore(d), seq_block=16)
        fill(ob, 40)
        ob.welcome(0)
        ob.ack(40)                                      # the server holds 1-40
        fill(ob, 1)                                     # meta written again (mark passed)
        os.rename(d + "/meta.json", d + "/meta.json.tmp")   # the cut: removed, not renamed
        ob2 = Outbox(ram_bytes=2048, flash_bytes=32768, store=DirStore(d), seq_block=16)
        assert ob2.boot == 2
        assert ob2.next_seq > 41, ob2.next_seq
        assert "meta.json" in os.listdir(d) and "meta.json.tmp" not in os.listdir(d)
    finally:
        rmtree(d)


def test_partial_meta_tmp_without_meta_is_discarded():
    d = tmpdir()
    try:
        ob = Outbox(ram_bytes=2048, flash_bytes=32768, store=DirStore(d))
        fill(ob, 3)
        os.remove(d + "/meta.json")
        with open(d + "/meta.json.tmp", "w") as f:
            f.write('{"v": 2, "boot": 1, "ma')               # cut mid-write
        ob = None
        ob = Outbox(ram_bytes=2048, flash_bytes=32768, store=DirStore(d))
        # the cut tmp was not taken for meta.json (that would be a corrupt meta.json)
        assert "meta.json.tmp" not in os.listdir(d) and ob.notice is None
    finally:
        rmtree(d)


class _FlakyStore(DirStore):
    """Saving meta.json fails with MemoryError while `fail` is set (a fragmented heap)."""
    fail = False

    def put(self, name, text):
        if self.fail and name == "meta.json":
            raise MemoryError
        DirStore.put(self, name, text)


def test_seqs_above_the_saved_mark_are_not_sent_before_the_mark_is_saved():
    # The seq mark is what keeps seqs unique across a power cut. If saving it failed and
    # readings above the old mark went out anyway, a power cut would reuse their seqs and
    # the server would drop the new readings as duplicates: lost silently.
    d = tmpdir()
    try:
        st = _FlakyStore(d)
        ob = Outbox(ram_bytes=4096, flash_bytes=32768, store=st, seq_block=8)
        ob.welcome(0)
        st.fail = True
        fill(ob, 30)                                     # passes the mark: save fails
        sent = []
        while True:
            b = ob.next_batch(64, 64)
            if not b:
                break
            sent += seqs(b)
        ob = None                                        # power cut
        st.fail = False
        ob2 = Outbox(ram_bytes=4096, flash_bytes=32768, store=DirStore(d), seq_block=8)
        assert not sent or max(sent) < ob2.next_seq, (sent, ob2.next_seq)
    finally:
        rmtree(d)


def test_sending_resumes_once_the_mark_is_saved():
    d = tmpdir()
    try:
        st = _FlakyStore(d)
        ob = Outbox(ram_bytes=4096, flash_bytes=32768, store=st, seq_block=8)
        ob.welcome(0)
        st.fail = True
        fill(ob, 30)
        batch_text(ob, 64, 64)
        st.fail = False
        sent = []
        while True:
            b = ob.next_batch(64, 64)
            if not b:
                break
            sent += seqs(b)
        assert sorted(sent)[-1] == 30 and len(set(sent)) == len(sent)
    finally:
        rmtree(d)


def batch_texts(ob, max_n, window):
    """What the app sends (next_batch_view), split back into reading texts."""
    return [json.dumps(r) for r in json.loads("[" + batch_text(ob, max_n, window) + "]")]


def drain(ob, srv):
    """A good link until the outbox is empty (srv: Server/SparseServer), sent the way the app
    sends."""
    drain_to(ob, srv, lambda ob: batch_texts(ob, 20, 64))


# ---- meta.json corrupt or lost, epoch file intact ----

class SparseServer:
    """Server's rules for seqs far apart (the recovery skips 2**26 seqs): stored seqs in a
    set, gaps as ranges, the cumulative ack over both. `dup` counts readings whose seq the
    server already stored (a reused seq: the new reading would be lost)."""

    def __init__(self):
        self.stored = set()
        self.ranges = []
        self.ack = 0
        self.dup = 0

    def _advance(self):
        moved = True
        while moved:
            moved = False
            if self.ack + 1 in self.stored:
                self.ack += 1
                moved = True
            for a, b in self.ranges:
                if a <= self.ack + 1 <= b:
                    self.ack = b
                    moved = True

    def gap(self, frm, to, why):
        assert frm <= to and why in ("dropped", "reboot"), (frm, to, why)
        self.ranges.append((frm, to))
        self._advance()

    def batch(self, texts):
        for t in texts:
            q = seq_of(t)
            if q in self.stored:
                self.dup += 1
            elif q > self.ack:
                self.stored.add(q)
        self._advance()
        return self.ack


def boot(d, **kw):
    return Outbox(ram_bytes=1024, flash_bytes=8192, store=DirStore(d), seg_bytes=512,
                  seq_block=16, **kw)


CORRUPT_METAS = ("garbage{", "", "null", "[1, 2]", '{"v": 2, "mark": "x"}',
                 '{"v": 2, "boot": 3, "mark": 80, "dropped": 0, "acked": 0, "gaps": 5}',
                 '{"v": 2, "boot": 3, "mark": -1, "dropped": 0, "acked": 0, "gaps": []}')


def test_corrupt_meta_keeps_the_epoch_and_never_reuses_a_seq():
    # Before: an unparseable meta.json restarted the numbering at 1 (or just above the
    # newest segment) in the same epoch, so new readings took seqs the server had stored and
    # were dropped there as resends; a meta.json of the wrong shape crashed every boot.
    for text in CORRUPT_METAS:
        d = tmpdir()
        try:
            ob = boot(d)
            epoch = ob.epoch
            srv = SparseServer()
            ob.welcome(0)
            fill(ob, 40)
            while ob.held():                           # 1-40 stored and acked
                ob.ack(srv.batch(ob.next_batch(20, 64)))
            fill(ob, 5)                                # 41-45 in RAM, never sent
            ob = None                                  # power cut
            write_file(d + "/meta.json", text)
            ob2 = boot(d)
            assert ob2.epoch == epoch, text
            assert ob2.notice is not None and "meta.json corrupt" in ob2.notice, ob2.notice
            assert ob2.next_seq > 45 and ob2.held() == 0
            gaps = ob2.pending_gaps()                  # 41-45 were produced and lost
            assert [g for g in gaps if g[0] <= 41 and 45 <= g[1] and g[2] == "reboot"], gaps
            ob2.on_connect()
            for g in gaps:
                srv.gap(*g)
            fill(ob2, 3)                               # new readings, sampled before the link
            new = list(range(ob2.next_seq - 3, ob2.next_seq))
            drain(ob2, srv)
            assert srv.dup == 0 and ob2.held() == 0, (text, srv.dup)
            for q in new:
                assert q in srv.stored, (text, q)
            assert srv.ack == ob2.next_seq - 1
            ob3 = boot(d)                              # meta.json is whole again
            assert ob3.notice is None and ob3.epoch == epoch
            assert ob3.next_seq >= ob2.next_seq and ob3.boot == ob2.boot + 1
        finally:
            rmtree(d)


def test_corrupt_or_lost_meta_keeps_the_segments_and_declares_the_rest():
    for text in ("garbage{", "[1, 2]", None):          # None: meta.json gone
        d = tmpdir()
        try:
            ob = boot(d)
            epoch = ob.epoch
            fill(ob, 70)                               # link down: segments on flash
            on_flash = ob.held() - ob.ring.n
            assert on_flash > 0
            ob = None                                  # power cut
            if text is None:
                os.remove(d + "/meta.json")
            else:
                write_file(d + "/meta.json", text)
            ob2 = boot(d)
            assert ob2.epoch == epoch and ob2.held() == on_flash
            assert ob2.notice is not None and "flash segments kept" in ob2.notice
            assert ("lost" if text is None else "corrupt") in ob2.notice
            assert ob2.next_seq > 70
            srv = SparseServer()
            drain(ob2, srv)
            assert ob2.held() == 0 and srv.dup == 0
            for q in range(1, on_flash + 1):           # every reading on flash delivered
                assert q in srv.stored, q
            assert srv.ack == ob2.next_seq - 1         # nothing left that stops the ack
        finally:
            rmtree(d)


def test_lost_meta_declares_the_holes_inside_segments():
    # 12 and 13 were dropped from RAM before the spill: their `gap dropped` was in meta.json,
    # now unreadable. Without a declaration the server's ack would stop at 12 for good.
    d = tmpdir()
    try:
        write_file(d + "/epoch", "00000000000000aa")
        write_file(d + "/s0000000010_0000000015_4",
                   "".join(rd(q) + "\n" for q in (10, 11, 14, 15)))
        write_file(d + "/meta.json", "\x00\x01 not json")
        ob = boot(d)
        assert ob.epoch == "00000000000000aa" and ob.held() == 4
        srv = SparseServer()
        drain(ob, srv)
        assert sorted(srv.stored) == [10, 11, 14, 15]
        assert srv.ack == ob.next_seq - 1 and ob.held() == 0
    finally:
        rmtree(d)
