"""Memory: the simulated board streams 10,000 readings without a MemoryError and without heap
growth between the first and the last thousand (the firmware logs `mem` lines with the live
heap after a collection every 1000 readings)."""
import re

MEM = re.compile(r"INFO app: mem readings=(\d+) seq=\d+ alloc=(\d+) free=(\d+) "
                 r"min_free=(\d+) held=(\d+)")


def test_10000_readings_no_growth(collector_proc, sim_board):
    c = collector_proc({"dev-1": "tok-1"})
    b = sim_board(c.url, sample_interval_s=0.005)   # heap: sim.DEFAULT_HEAP (see docs)
    b.wait_for_line("INFO app: mem readings=10000", timeout=150)
    c.wait_seqs("dev-1", 10000, timeout=60)
    assert not b.lines("MemoryError"), "\n".join(b.lines("MemoryError")[:5])
    assert b.boots == 1 and not b.lines("Traceback")
    mem = {int(m.group(1)): (int(m.group(2)), int(m.group(5)))
           for m in map(MEM.search, b.lines("INFO app: mem")) if m}
    first, held1 = mem[1000]
    last, held10 = mem[10000]
    # readings still held in the outbox are live data, not growth: allow for them
    per_reading = 160
    assert last - per_reading * held10 <= first - per_reading * held1 + 2048, mem
