# dual: runs on CPython and on MicroPython
"""Outbox: ordering, acks, byte bounds, drop counting, spill to flash and reload after a power
cut, against a model server that checks nothing is lost or stored twice."""
import gc
import json
import os
import sys

from dualsupport import raises, rmtree, tmpdir
from outbox_model import Server, batch_text, campaign, drain_to, flash_used, lcg

from fieldlink import proto
from fieldlink.outbox import DirStore, Outbox


def rd(q, pad=0):
    return proto.reading(q, None, q * 100, "env.temperature", 20 + q % 7, "C",
                         "x" * pad if pad else None)


def fill(ob, n, pad=0):
    for _ in range(n):
        ob.push(ob.next_seq, rd(ob.next_seq, pad))


def seq_of(text):
    return json.loads(text)["q"]


def seqs(texts):
    return [seq_of(t) for t in texts]


def test_order_window_and_acks():
    ob = Outbox(ram_bytes=4096)
    fill(ob, 10)
    assert ob.held() == 10 and ob.first() == 1 and ob.next_seq == 11
    assert seqs(ob.next_batch(4, 6)) == [1, 2, 3, 4]
    assert seqs(ob.next_batch(4, 6)) == [5, 6]       # window of 6 in flight
    assert ob.next_batch(4, 6) == []
    ob.ack(3)
    assert ob.ledger.inflight == 3 and ob.first() == 4 and ob.held() == 7
    assert seqs(ob.next_batch(10, 6)) == [7, 8, 9]
    ob.on_connect()                                   # reconnect: resend what is unacked
    assert seqs(ob.next_batch(20, 64)) == [4, 5, 6, 7, 8, 9, 10]
    ob.ack(10)
    assert ob.held() == 0 and ob.first() == 11 and ob.ring.used == 0


def test_push_must_follow_next_seq():
    ob = Outbox(ram_bytes=4096)
    raises(ValueError, ob.push, 5, rd(5))


def test_ram_only_drops_oldest_counts_and_declares():
    ob = Outbox(ram_bytes=1024)
    size = len(rd(1)) + 1
    fill(ob, 40)
    assert ob.ring.used <= 1024
    kept = ob.held()
    assert kept == 1024 // size or kept == 1024 // size - 1 or kept >= 10
    assert ob.dropped == 40 - kept
    gaps = ob.pending_gaps()
    assert gaps == [(1, 40 - kept, "dropped")]
    assert seqs(ob.next_batch(500, 500))[0] == 41 - kept
    assert ob.pending_gaps() == []                    # sent once per connection


def test_never_drops_what_the_server_may_hold():
    ob = Outbox(ram_bytes=1024)
    fill(ob, 5)
    assert seqs(ob.next_batch(3, 64)) == [1, 2, 3]    # in flight
    ob.on_connect()                                   # link died before the ack
    fill(ob, 40)
    gaps = ob.pending_gaps()
    assert gaps[0][0] == 4                            # 1-3 may be stored: kept
    assert ob.held() >= 3
    ob.welcome(2)                                     # the server had 1-2 only
    fill(ob, 10)
    assert [g for g in ob.ledger.gaps if g[0] <= 3 <= g[1]]  # now 3 is droppable, and dropped
    assert not [g for g in ob.ledger.gaps if g[0] <= 2]


def test_acked_gap_is_forgotten_and_resent_until_then():
    ob = Outbox(ram_bytes=1024)
    fill(ob, 40)
    g = ob.pending_gaps()
    ob.on_connect()
    assert ob.pending_gaps() == g                     # not acked yet: sent again
    ob.ack(g[0][1])
    ob.on_connect()
    assert ob.pending_gaps() == []


def test_welcome_ack_above_next_seq_moves_next_seq():
    ob = Outbox(ram_bytes=4096)
    fill(ob, 3)
    ob.welcome(500)                                   # the server knows more than we do
    assert ob.next_seq == 501 and ob.held() == 0
    fill(ob, 1)
    assert seqs(ob.next_batch(5, 5)) == [501]


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
        gaps = [tuple(g[:3]) for g in ob.ledger.gaps]
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


def run_model(seed, steps, power_cuts):
    """Random pushes, sends, acks, link drops and (optionally) power cuts against Server."""
    rand = lcg(seed)
    gc.collect()  # the previous run's buffers: one heap of 160k runs this whole module
    d = tmpdir()
    try:
        def new():
            return Outbox(ram_bytes=1500, flash_bytes=6000, store=DirStore(d), seg_bytes=600,
                          seq_block=40)
        srv = Server(4096)  # the campaigns reach seq ~1900 (power cuts skip seq_block each)
        ob, produced = campaign(new(), new, srv, rand, steps, power_cuts, rd)
        drain_to(ob, srv)                               # finally: a good link, drain all
        assert ob.held() == 0, ob.held()
        top = ob.next_seq - 1
        assert top >= produced
        for q in range(1, top + 1):
            assert srv.state[q], (seed, q)              # stored or declared
        if not power_cuts:
            assert srv.count(srv.DROPPED) == ob.dropped, (srv.count(srv.DROPPED), ob.dropped)
            assert srv.count(srv.REBOOT) == 0
        assert srv.ack == top
        return ob
    finally:
        rmtree(d)


def test_model_no_loss_exact_drops():
    total_dropped = 0
    for seed in range(1, 7):
        total_dropped += run_model(seed, 1500, False).dropped
    assert total_dropped > 0  # the campaign did exercise dropping


def test_model_with_power_cuts():
    for seed in range(11, 16):
        run_model(seed, 1500, True)


def test_ram_is_one_buffer_compacted_in_place():
    ob = Outbox(ram_bytes=1024)
    buf = ob.ring._mv
    for round_ in range(30):                          # far more bytes than the buffer holds
        fill(ob, 7, pad=round_ % 5)
        b = ob.next_batch(7, 64)
        ob.ack(seqs(b)[-1])
    assert ob.ring._mv is buf and len(buf) == 1024 and ob.held() == 0 and ob.ring.used == 0
    s0 = ob.next_seq                                  # 211
    fill(ob, 5)
    ob.next_batch(2, 64)                              # s0, s0+1 in flight
    ob.ledger.add_gap(s0 + 2, s0 + 2, "dropped")      # drops s0+2 (as a full RAM does):
    ob.ring.remove(2)                                 # a hole in the buffer
    assert ob.dropped == 1 and ob.pending_gaps() == [(s0 + 2, s0 + 2, "dropped")]
    used = ob.ring.used
    fill(ob, (1024 - used) // len(rd(9)))             # fills the buffer: slides over the hole
    assert ob.dropped == 1 and ob.ring.used <= 1024
    got = seqs(ob.next_batch(50, 64))
    assert got == list(range(s0 + 3, ob.next_seq))


def test_next_batch_view_is_the_joined_readings():
    ob = Outbox(ram_bytes=2048)
    fill(ob, 6)
    t = batch_text(ob, 4, 64)
    assert t == ",".join([rd(q) for q in (1, 2, 3, 4)])
    assert ob.ledger.inflight == 4
    assert batch_text(ob, 4, 5) == rd(5)          # the window stops it
    ob.ack(5)
    assert batch_text(ob, 4, 64) == rd(6) and batch_text(ob, 4, 64) == ""


def test_next_batch_view_is_the_buffer_then_a_list_from_flash():
    ob = Outbox(ram_bytes=2048)
    fill(ob, 3)
    v = ob.next_batch_view(2, 64)
    assert isinstance(v, memoryview)                  # no string: a view of the buffer
    assert bytes(v) == ",".join([rd(1), rd(2)]).encode()
    assert bytes(ob.next_batch_view(5, 64)) == rd(3).encode()
    assert not ob.next_batch_view(5, 64)              # nothing left to send
    d = tmpdir()
    try:
        ob = Outbox(ram_bytes=1024, flash_bytes=32768, store=DirStore(d), seg_bytes=512)
        fill(ob, 40)                                  # spills: the oldest are on flash
        ob.on_connect()
        ob.welcome(0)
        v = ob.next_batch_view(3, 64)
        # from flash: each reading as read, with its line's newline (the sender's ",")
        assert v == [(rd(q) + "\n").encode() for q in (1, 2, 3)]
        ob.ack(3)
        while True:  # on to the RAM readings behind the flash: each with its ","
            v = ob.next_batch_view(64, 64)
            if not v or (rd(40) + ",").encode() in v:
                break
            ob.ack(json.loads(v[-1][:-1])["q"])
        assert isinstance(v, list) and v[-1] == (rd(40) + ",").encode(), v
    finally:
        rmtree(d)


def test_full_of_in_flight_readings_drops_the_new_one_counted():
    ob = Outbox(ram_bytes=1024)
    fill(ob, 100)
    n = len(seqs(ob.next_batch(100, 100)))            # all of RAM in flight
    before = ob.dropped
    fill(ob, 3)                                       # no room, nothing droppable
    assert ob.dropped == before + 3 and ob.next_seq == 104
    assert ob.pending_gaps()[-1] == (101, 103, "dropped")
    assert ob.held() == n


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
        assert len(ob.ledger.gaps) <= 2                        # adjacent drops are one gap
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
