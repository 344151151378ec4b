"""A board that reboots after a long outage: its flash holds hundreds of outbox segments (here
600, the backlog of a 1 MB flash outbox). It must boot on the memory test's heap, send all of
them once, in order, and stream on. Before, the outbox's boot recovery kept a list and a name
per segment and listed every file name at once: MemoryError at boot even on a 256k heap, so
the board reset in a loop with its readings stuck on flash."""
import os

from fieldlink import proto
from fieldlink.outbox import DirStore, Outbox
MEM_HEAP = "152k"  # the memory test's heap (test_memory.MEM_HEAP)
N = 1800  # readings on flash, three to a segment


def make_backlog(outbox_dir):
    ob = Outbox(ram_bytes=1024, flash_bytes=4 << 20, store=DirStore(str(outbox_dir)),
                seg_bytes=256)
    for q in range(1, N + 1):
        ob.push(q, proto.reading(q, None, q * 100, "sim.temperature", 20 + q % 7, "C"))
    ob.flush()  # a clean stop: everything on flash, no reboot gap
    return [f for f in os.listdir(outbox_dir) if f.startswith("s")]


def test_reboot_after_a_long_outage_sends_600_segments(tmp_path, collector_proc, sim_board):
    flash = tmp_path / "flash"
    flash.mkdir()
    segs = make_backlog(flash / "outbox")
    assert len(segs) >= 600
    c = collector_proc({"dev-1": "tok-1"})
    b = sim_board(c.url, flash=flash, heapsize=MEM_HEAP, outbox_flash_bytes=4 << 20,
                  sample_interval_s=0.05)
    seqs = c.wait_seqs("dev-1", N + 100, timeout=90)
    assert seqs[:N + 100] == list(range(1, N + 101))
    assert not b.lines("MemoryError"), b.lines("MemoryError")[:3]
    assert b.boots == 1 and not b.lines("Traceback")
    assert b.lines("held %d" % N), b.lines("INFO app: board")
    assert not [f for f in os.listdir(flash / "outbox") if f.startswith("s0000000001")]
