# dual: runs on CPython and on MicroPython
"""Outbox: the segment table against the files on flash, through random pushes, batches of up
to 40 with a window of up to 200 (lost acks, link drops), spills, power cuts, clean reboots
and a filesystem that fills up and frees again, with segments of one reading (far more of
them than the 16 the table lists). After every step: each file is listed once (in the table,
in the loaded head, or counted: first seq >= _sfrom, _sq files of _sn readings), flash_used is
the files' bytes; the model server fails a `gap dropped` over a stored seq and a reading sent
under a dropped seq; at the end everything is stored or declared."""
import gc
import json
import os

from dualsupport import rmtree, tmpdir
from outbox_model import FullFS, Server, drain_to, flash_side, flash_used, lcg

from fieldlink import proto
from fieldlink.outbox import Outbox


def rd(q, pad):
    return proto.reading(q, None, 100, "e.t", 20 + q % 7, "C", "x" * pad if pad else None)


def seg_name(a, b, c):
    return "s%010d_%010d_%d" % (a, b, c)


def parse(n):
    if n[:1] != "s" or n[-4:] == ".tmp":
        return None
    f = n[1:].split("_")
    return int(f[0]), int(f[1]), int(f[2])


def check(ob, d, where):
    files = {}
    for n in os.listdir(d):
        s = parse(n)
        if s:
            files[n] = (s, os.stat(d + "/" + n)[6])
    fl = flash_side(ob)  # (loaded while the flash holds readings)
    if fl is None:
        assert not [n for n in os.listdir(d) if parse(n)] and flash_used(ob) == 0, where
        return
    segs = fl._segs
    listed = [seg_name(segs[j], segs[j + 1], segs[j + 2]) for j in range(0, len(segs), 4)]
    head = [h[1] for h in fl._hsegs]
    firsts = [segs[j] for j in range(0, len(segs), 4)]
    assert firsts == sorted(firsts), where
    sq = sn = 0
    for n in listed + head:
        assert n in files, (where, n)
        assert files[n][0][0] < fl._sfrom, (where, n, fl._sfrom)
    for n in files:
        if n in listed:
            assert listed.count(n) == 1 and n not in head, (where, n)
            assert files[n][1] == segs[4 * listed.index(n) + 3], (where, n)
        elif n not in head:
            assert files[n][0][0] >= fl._sfrom, (where, n, fl._sfrom)
            sq += 1
            sn += files[n][0][2]
    assert (fl._sq, fl._sn) == (sq, sn), (where, fl._sq, fl._sn, sq, sn)
    used = 0
    for n in files:
        used += files[n][1]
    assert flash_used(ob) == used, (where, flash_used(ob), used)


def run(seed, steps):
    rand = lcg(seed)
    gc.collect()
    d = tmpdir()
    st = FullFS(d)
    try:
        def new():
            return Outbox(ram_bytes=1024, flash_bytes=2000, store=st, seg_bytes=70,
                          seq_block=1 + rand(40))
        ob = new()
        srv = Server(8192)
        up = False
        for step in range(steps):
            if rand(100) < 1:
                st.full = not st.full
            op = rand(100)
            if op < 55:
                ob.push(ob.next_seq, rd(ob.next_seq, rand(30)))
            elif op < 63 and up:
                for g in ob.pending_gaps():
                    srv.gap(*g)
                if rand(2):
                    b = ob.next_batch(1 + rand(40), 1 + rand(200))
                else:  # as the supervisor sends: a view of RAM, or flash lines as read
                    v = ob.next_batch_view(1 + rand(40), 1 + rand(200))
                    if isinstance(v, list):
                        v = b",".join([r[:-1] for r in v])
                    b = [json.dumps(r) for r in json.loads("[%s]" % str(v, "utf-8"))] \
                        if v else []
                qs = [json.loads(t)["q"] for t in b]
                assert qs == sorted(qs), (seed, step, qs)
                a = srv.batch(b)
                if rand(2):
                    ob.ack(a)
            elif op < 65:
                up = not up
                if up:
                    ob.on_connect()
                    ob.welcome(srv.ack)
            elif op < 69:
                ob.spill(rand(2) == 0)
            elif op < 72:
                ob.first()
            elif op < 74:
                if rand(4) == 0:
                    ob.flush()  # a clean reboot
                ob = None       # else a power cut
                ob = new()
                up = False
            check(ob, d, (seed, step))
        st.full = False
        ob.push(ob.next_seq, rd(ob.next_seq, 0))
        drain_to(ob, srv)
        srv.batch([])
        top = ob.next_seq - 1
        assert ob.held() == 0, (seed, ob.held())
        for q in range(1, top + 1):
            assert srv.at(q), (seed, q)
        assert srv.ack == top, (seed, srv.ack, top)
        check(ob, d, (seed, "end"))
        return ob.dropped
    finally:
        rmtree(d)


def test_table_and_files_agree_through_outages_power_cuts_and_a_full_filesystem():
    dropped = 0
    for seed in range(1, 7):
        dropped += run(seed, 1500)
    assert dropped > 0
