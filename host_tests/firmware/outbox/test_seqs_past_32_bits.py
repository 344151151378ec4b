# dual: runs on CPython and on MicroPython
"""Outbox: seqs past 2**32 and past ten digits. A board sampling every 2 ms (the memory
test's rate) reaches seq 2**32 after ~99 days and 10**10 after ~231 days; the protocol allows
any seq within 64 bits. The outbox's index arrays must hold such seqs (MicroPython's
array("I") silently keeps the low 32 bits), and segment files named after them must be found
again at boot. Random pushes, sends, acks, link drops, spills and power cuts against a model
server, from a numbering that starts just below the limit (a server's ack above next_seq
moves it there, as after a flash wipe)."""
import gc
import json

from dualsupport import rmtree, tmpdir
from outbox_model import Server, campaign, drain_to, lcg

from fieldlink import proto
from fieldlink.outbox import DirStore, Outbox


def rd(q, pad):
    return proto.reading(q, None, 100, "env.temperature", 20 + q % 7, "C",
                         "x" * pad if pad else None)


def run_model(base, seed, steps, power_cuts):
    rand = lcg(seed)
    gc.collect()
    d = tmpdir()
    try:
        def new():
            return Outbox(ram_bytes=1500, flash_bytes=6000, store=DirStore(d), seg_bytes=600,
                          seq_block=40)
        ob = new()
        srv = Server(4096, base)
        ob.on_connect()
        ob.welcome(base)  # the server holds everything up to base: continue above it
        assert ob.next_seq == base + 1
        ob = campaign(ob, new, srv, rand, steps, power_cuts, rd, up=True)[0]
        drain_to(ob, srv)  # finally a good link: drain everything
        top = ob.next_seq - 1
        assert ob.held() == 0, ob.held()
        assert top > base + 300, top  # the run did cross the limit by far
        for q in range(base + 1, top + 1):
            assert srv.at(q), (seed, q)  # stored or declared
        assert srv.ack == top, (srv.ack, top)
        if not power_cuts:
            assert srv.count(srv.DROPPED) == ob.dropped
        return srv.count(srv.STORED)
    finally:
        rmtree(d)


def test_seqs_past_2_pow_32():
    base = (1 << 32) - 100
    stored = 0
    for seed in (1, 2):
        stored += run_model(base, seed, 1200, False)
    stored += run_model(base, 3, 1200, True)
    assert stored > 600


def test_seqs_past_ten_digits_survive_power_cuts():
    # segment files are named s<first>_<last>_<count>, seqs zero-padded to ten digits
    base = 10 ** 10 - 100
    for seed in (4, 5):
        run_model(base, seed, 1200, True)


def test_boot_finds_segments_with_eleven_digit_seqs():
    d = tmpdir()
    try:
        def new():
            return Outbox(ram_bytes=1024, flash_bytes=32768, store=DirStore(d), seg_bytes=256)
        ob = new()
        ob.welcome(10 ** 10 - 5)
        first = ob.next_seq
        for _ in range(30):
            ob.push(ob.next_seq, rd(ob.next_seq, 0))
        ob.flush()  # clean stop: everything on flash
        top = ob.next_seq - 1
        ob = None
        ob = new()
        assert ob.held() == 30, ob.held()
        assert ob.first() == first
        assert ob.next_seq == top + 1, (ob.next_seq, top)
        ob.on_connect()
        ob.welcome(first - 1)
        got = []
        while True:
            b = ob.next_batch(20, 64)
            if not b:
                break
            got += [json.loads(t)["q"] for t in b]
            ob.ack(got[-1])
        assert got == list(range(first, top + 1)), got
    finally:
        rmtree(d)
