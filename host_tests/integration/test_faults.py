"""The short fault campaign (the long one is `fieldlink soak`): the real firmware on the
virtual board streams through the fault-injecting proxy to a real collector while the proxy
resets, blackholes, delays, injects garbage and reads slowly, the collector restarts and the
board loses power. At the end the store holds every seq the board produced exactly once, or
the seq lies in a gap the board declared, and the dropped count is exact. The same campaign
runs over wss:// (the collector serving TLS, the board verifying it): there the proxy's garbage
lands inside TLS records, a broken connection the board must reconnect from, losing nothing."""
import shutil
import time

import pytest

from fieldlink_tools.soak import TLSFiles, audit_device, final_audit

DEV = "dev-1"


def stored_count(c):
    st = c.store()
    try:
        return len(st.readings(DEV))
    finally:
        st.close()


def progress(c, b, more=15, timeout=45, what="progress"):
    """Wait until the collector stored `more` new readings (the link works again)."""
    n = stored_count(c)
    try:
        c.wait_seqs(DEV, n + more, timeout=timeout)
    except TimeoutError:
        raise AssertionError("no %s; board log tail:\n%s" % (what, "\n".join(b.lines()[-40:])))


def failures(b):
    return len(b.lines("WARN link:"))


def wait_more_failures(b, n, timeout=20, what="a detected failure"):
    deadline = time.monotonic() + timeout
    while failures(b) <= n:
        if time.monotonic() > deadline:
            raise AssertionError("board did not report %s; tail:\n%s"
                                 % (what, "\n".join(b.lines()[-30:])))
        time.sleep(0.05)


@pytest.mark.parametrize("scheme", ["ws", "wss"])
def test_short_fault_campaign(collector_proc, sim_board, fault_proxy, tmp_path, scheme):
    if scheme == "wss":
        tls = TLSFiles(str(tmp_path / "tls"))   # what `fieldlink soak --tls` makes
        c = collector_proc({DEV: "tok-1"}, cert=tls.cert, key=tls.key)
        flash = tmp_path / "flash-tls"
        flash.mkdir()
        shutil.copyfile(tls.ca, flash / "ca.pem")   # the board verifies the collector
        on_flash = {"flash": flash, "ca_file": "ca.pem"}
    else:
        c = collector_proc({DEV: "tok-1"})
        on_flash = {}
    fp = fault_proxy(c.port)
    b = sim_board("%s://127.0.0.1:%d/ws" % (scheme, fp.port), sample_interval_s=0.05,
                  **on_flash)
    progress(c, b, what="first readings")
    assert b.lines("streaming to %s://" % scheme)

    n = failures(b)                       # 1. connection reset
    fp.reset()
    wait_more_failures(b, n, what="the reset")
    progress(c, b, what="recovery after reset")

    n = failures(b)                       # 2. blackhole: half-open link, keepalive finds it
    fp.set_mode("blackhole")
    wait_more_failures(b, n, what="the blackhole (keepalive)")
    assert b.lines("LinkDead") or b.lines("stalled") or b.lines("TimeoutError")
    fp.set_mode("pass")
    progress(c, b, what="recovery after blackhole")

    fp.set_mode("delay", delay_s=0.3)     # 3. a slow network still delivers
    progress(c, b, more=10, what="progress under delay")
    fp.set_mode("pass")

    n = failures(b)                       # 4. garbage bytes: WebSocket protocol error
    fp.garbage(b"\xff\xfe\x00garbage")     # (over wss://: a bad TLS record)
    wait_more_failures(b, n, what="garbage bytes")
    if scheme == "wss":   # the TLS layer refused the record: the connection is lost (1006)
        assert "1006" in b.lines("WARN link:")[n], b.lines("WARN link:")[n:]
    progress(c, b, what="recovery after garbage bytes")

    n = failures(b)                       # 5. a server that answers garbage: close 1007
    fp.garbage_text("this is not json {")  # (over wss://: plaintext amid TLS, a bad record)
    wait_more_failures(b, n, what="garbage text")
    progress(c, b, what="recovery after garbage text")

    fp.set_mode("slow")                   # 6. slow reader: the board backs up, then catches up
    time.sleep(2)                         # let the backlog build (a fault's duration)
    fp.set_mode("pass")
    progress(c, b, what="recovery after slow reader")

    c.restart()                           # 7. collector restart (same port behind the proxy)
    progress(c, b, what="recovery after collector restart")

    b.power_cut()                         # 8. power cut: kill -9, restart from the same flash
    b.start()
    progress(c, b, what="recovery after power cut")

    # Stop sampling, drain, read the board's own counters, audit the store (the same audit
    # as `fieldlink soak`).
    a = final_audit(c, fp, {DEV: b}, timeout=45)[DEV]
    assert a.ok, "%r\nboard log tail:\n%s" % (a, "\n".join(b.lines()[-40:]))
    assert a.stored > 100 and a.duplicates == 0 and a.lost_undeclared == 0
    assert [g for g in a.gaps if g["why"] == "reboot"]   # the power cut was declared
    assert not b.lines("Traceback") and not b.lines("MemoryError")
    assert b.lines("gap ")


class _FakeStore:
    """The four Store methods the audit reads, over plain lists."""

    def __init__(self, seqs, gaps, ack):
        self._seqs, self._gaps, self._ack = seqs, gaps, ack

    def readings(self, device):
        return [{"q": q} for q in self._seqs]

    def gaps(self, device):
        return [{"from": a, "to": b, "why": w} for a, b, w in self._gaps]

    def ack(self, device):
        return self._ack


def test_audit_passes_a_complete_store_and_names_each_kind_of_failure():
    good = _FakeStore([1, 2, 5, 6, 9], [(3, 4, "dropped"), (7, 8, "reboot")], 9)
    a = audit_device(good, DEV, produced=9, dropped_reported=2)
    assert a.ok, a.problems
    assert (a.stored, a.dropped, a.reboot_gap, a.lost_undeclared) == (5, 2, 2, 0)

    def problems(seqs, gaps, ack, produced=9, dropped=0):
        return audit_device(_FakeStore(seqs, gaps, ack), DEV, produced, dropped).problems

    assert problems([1, 2, 2, 3, 4, 5, 6, 7, 8, 9], [], 9) == ["stored twice: 1 rows"]
    assert problems([1, 2, 4, 5, 6, 7, 8, 9], [], 9) == ["lost without a gap: 3"]
    assert "declared dropped but stored: 3" in problems(list(range(1, 10)), [(3, 3, "dropped")],
                                                        9, dropped=1)
    assert "board says 2 dropped, gaps declare 1" in problems(
        [1, 2, 4, 5, 6, 7, 8, 9], [(3, 3, "dropped")], 9, dropped=2)
    assert "not drained: ack 7 < produced 9" in problems(list(range(1, 8)), [], 7)
    assert "stored seqs the board never produced: 10" in problems(list(range(1, 11)), [], 10)
    assert "in server-side lost gaps: 1 seqs" in problems(
        [1, 2, 4, 5, 6, 7, 8, 9], [(3, 3, "lost")], 9)
