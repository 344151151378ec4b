"""Memory: the simulated board streams 10,000 readings without a MemoryError and without heap
growth between the first and the last thousand (the firmware logs `mem` lines with the live
heap after a collection every 1000 readings).

Heap: MEM_HEAP, 16k above the smallest size `fieldlink bench link` found to stream 10,000
readings at ~1500/s offered (136k, 8k steps; this test, at 200/s, passed at 136k too), not the
issue's 96k: what the board keeps while streaming (`fieldlink bench heap`: the firmware's .mpy
code and qstrs on the unix port's 64-bit heap, the virtual board's stand-ins, the outbox's
buffer) is ~101 KB before the connection's own buffers. See docs/architecture.md (Memory) for
the numbers and what was done about them."""
import re

from fieldlink_tools import sim

MEM_HEAP = "152k"
MEM = re.compile(r"INFO app: mem readings=(\d+) seq=\d+ alloc=(\d+) free=(\d+) "
                 r"min_free=(\d+) held=(\d+)")


def test_10000_readings_no_growth(collector_proc, sim_board):
    c = collector_proc({"dev-1": "tok-1"})
    b = sim_board(c.url, sample_interval_s=0.005, heapsize=MEM_HEAP)
    b.wait_for_line("INFO app: mem readings=10000", timeout=150)
    c.wait_seqs("dev-1", 10000, timeout=60)
    assert not b.lines("MemoryError"), "\n".join(b.lines("MemoryError")[:5])
    assert b.boots == 1 and not b.lines("Traceback")
    assert not b.lines("INFO link: gap"), b.lines("INFO link: gap")[:3]
    assert c.seqs("dev-1")[:10000] == list(range(1, 10001))
    mem = {int(m.group(1)): int(m.group(2))
           for m in map(MEM.search, b.lines("INFO app: mem")) if m}
    assert sorted(mem)[:10] == list(range(1000, 10001, 1000)), sorted(mem)
    # The outbox's RAM is one preallocated buffer, so readings held are not heap growth:
    # the live heap after gc at reading 10,000 is the one at reading 1,000 (a little slack
    # for the lists of seqs in flight, which hold at most `window` small ints).
    assert mem[10000] <= mem[1000] + 1024, mem
    assert max(mem.values()) <= mem[1000] + 2048, mem
    assert sim.DEFAULT_HEAP  # the full virtual board's default, documented beside it
