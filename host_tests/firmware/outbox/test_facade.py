# dual: runs on CPython and on MicroPython
"""Outbox, the façade: ordering, the window, acks, byte bounds, drop counting and declaring,
the batch views, against a model server that checks nothing is lost or stored twice (random
campaigns with and without power cuts)."""
import gc
import json

from dualsupport import raises, rmtree, tmpdir
from outbox_model import Server, batch_text, campaign, drain_to, fill, lcg, rd, seqs

from fieldlink.outbox import DirStore, Outbox


def test_order_window_and_acks():
    ob = Outbox(ram_bytes=4096)
    fill(ob, 10)
    assert ob.held() == 10 and ob.first() == 1 and ob.next_seq == 11
    assert seqs(ob.next_batch(4, 6)) == [1, 2, 3, 4]
    assert seqs(ob.next_batch(4, 6)) == [5, 6]       # window of 6 in flight
    assert ob.next_batch(4, 6) == []
    ob.ack(3)
    assert ob.inflight == 3 and ob.first() == 4 and ob.held() == 7
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
    assert [g for g in ob.gaps if g[0] <= 3 <= g[1]]  # now 3 is droppable, and dropped
    assert not [g for g in ob.gaps if g[0] <= 2]


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
    ob.add_gap(s0 + 2, s0 + 2, "dropped")      # drops s0+2 (as a full RAM does):
    ob.ring.remove(2)                                 # s0, s0+1 move up over it
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
    assert ob.inflight == 4
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
