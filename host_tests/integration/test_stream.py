"""The real firmware on the virtual board streams to the real collector: assert on what the
collector stored, on the commands' replies, and on a malformed config (a refused token's pacing:
test_supervisor.py)."""
import time

import pytest

from fieldlink_tools import paths

# machine.reset() on the virtual board comes from tools/vboard/machine.py (engineer "sensors")
needs_vboard_machine = pytest.mark.skipif(
    not (paths.VBOARD_MP / "machine.py").exists(),
    reason="tools/vboard/machine.py (virtual machine.reset/WDT) not in the tree yet")



def board_log_on_failure(board):
    return "\n--- board log tail ---\n" + "\n".join(board.lines()[-40:])


def wait(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.1)


def test_streams_every_reading_once_in_order(collector_proc, sim_board):
    c = collector_proc({"dev-1": "tok-1"})
    b = sim_board(c.url)
    try:
        seqs = c.wait_seqs("dev-1", 60, timeout=60)
    except TimeoutError:
        raise AssertionError("no readings" + board_log_on_failure(b))
    assert seqs == list(range(1, len(seqs) + 1))
    st = c.store()
    try:
        rs = st.readings("dev-1")
        names = {r["n"] for r in rs}
        assert names == {"sim.temperature", "sim.humidity", "sim.pressure"}
        assert [r for r in rs if r["ts"] is not None]  # clock set from welcome.time
        dev = [d for d in st.devices() if d["device"] == "dev-1"][0]
        assert dev["hello"]["fw"] and dev["hello"]["board"] == "virtual"
        assert dev["hello"]["boot"] == 1
    finally:
        st.close()
    assert b.lines("INFO link: streaming to")
    assert not b.lines("Traceback")


def test_reflashed_board_starts_a_new_epoch_and_is_stored(collector_proc, sim_board,
                                                          tmp_path):
    """A reflash wipes the flash: the board numbers from 1 again under a new epoch, and the
    collector stores those readings above the old ones instead of dropping them as resends."""
    import shutil
    c = collector_proc({"dev-1": "tok-1"})
    flash = tmp_path / "flash-reflash"
    b = sim_board(c.url, flash=flash)
    c.wait_seqs("dev-1", 30, timeout=60)
    epoch1 = (flash / "outbox" / "epoch").read_text()
    b.power_cut()
    before = len(c.seqs("dev-1"))
    shutil.rmtree(flash)                              # `fieldlink flash` erases the chip
    b.start()                                         # writes config.json and board.json again
    st_seqs = c.wait_seqs("dev-1", before + 30, timeout=60)
    epoch2 = (flash / "outbox" / "epoch").read_text()
    assert epoch2 != epoch1 and len(epoch2) == 16
    assert st_seqs == sorted(set(st_seqs)) and len(st_seqs) >= before + 30
    st = c.store()
    try:
        eps = st.epochs("dev-1")
        assert [e["epoch"] for e in eps] == [epoch1, epoch2], eps
        assert eps[1]["offset"] >= before and eps[1]["previous"] == epoch1
        dev = [d for d in st.devices() if d["device"] == "dev-1"][0]
        assert dev["epoch"] == epoch2 and dev["hello"]["epoch"] == epoch2
        new = [r for r in st.readings("dev-1") if r["epoch"] == epoch2]
        # the new epoch's own numbering starts again at 1, stored above the old readings
        assert [r["dq"] for r in new] == list(range(1, len(new) + 1))
        assert len(new) == len(st_seqs) - before
    finally:
        st.close()
    assert len(b.lines("reset_cause")) == 2 and b.lines("epoch %s" % epoch2)
    assert not b.lines("Traceback") and not b.lines("WARN outbox")


def test_commands_are_answered(collector_proc, sim_board):
    c = collector_proc({"dev-1": "tok-1"})
    b = sim_board(c.url, sample_interval_s=5)
    c.wait_seqs("dev-1", 3, timeout=60)
    r = c.command("dev-1", "set_interval", {"sensor": "*", "interval_s": 0.2})
    assert r["ok"] is True and r["result"] == 0.2
    n = len(c.seqs("dev-1"))
    c.wait_seqs("dev-1", n + 15, timeout=30)      # faster now
    r = c.command("dev-1", "set_interval", {"sensor": "nope", "interval_s": 1})
    assert r["ok"] is False and "nope" in r["err"]
    assert c.command("dev-1", "sample_now")["ok"] is True
    assert c.command("dev-1", "health")["ok"] is True
    r = c.command("dev-1", "selfdestruct")
    assert r["ok"] is False and r["err"] == "unknown command"
    assert not b.lines("Traceback")


@needs_vboard_machine
def test_reboot_command_resumes_without_gap(collector_proc, sim_board):
    c = collector_proc({"dev-1": "tok-1"})
    b = sim_board(c.url)
    c.wait_seqs("dev-1", 20, timeout=60)
    assert c.command("dev-1", "reboot")["ok"] is True
    b.wait_for_line("reset_cause", count=2, timeout=30)
    n = len(c.seqs("dev-1"))
    seqs = c.wait_seqs("dev-1", n + 20, timeout=60)
    assert seqs == list(range(1, len(seqs) + 1))   # clean reboot: nothing lost, no reboot gap
    st = c.store()
    try:
        assert st.gaps("dev-1") == []
    finally:
        st.close()
    assert b.boots == 2 and b.exits[0] == 75


def test_ctrl_c_stops_the_board_without_losing_a_reading(collector_proc, sim_board, tmp_path):
    # Ctrl-C (the demo or `fieldlink sim` stopping the board, someone at the REPL) is an
    # intended stop: everything goes to flash with the seq mark, and the next boot sends it
    # on. Before: RAM's readings and the rest of the seq block were declared a reboot gap.
    c = collector_proc({"dev-1": "tok-1"})
    flash = tmp_path / "flash-ctrl-c"
    b = sim_board(c.url, flash=flash, sample_interval_s=0.05)
    c.wait_seqs("dev-1", 30, timeout=60)
    b.stop()  # SIGINT: KeyboardInterrupt in the firmware
    n = len(c.seqs("dev-1"))
    b2 = sim_board(c.url, flash=flash, sample_interval_s=0.05)
    seqs = c.wait_seqs("dev-1", n + 30, timeout=60)
    assert seqs == list(range(1, len(seqs) + 1)), seqs  # in order, none missing
    assert not b2.lines("INFO link: gap"), b2.lines("INFO link: gap")
    st = c.store()
    try:
        assert st.gaps("dev-1") == []
    finally:
        st.close()
    assert b.lines("INFO app: stopped:"), b.lines()[-10:]


def test_malformed_config_names_the_key(sim_board):
    b = sim_board("ws://127.0.0.1:9/ws", ping_interval_s="abc")
    assert b.wait() == 0
    assert b.lines('ERROR config: config.ping_interval_s: expected a number >= 1 and <= 86400, got "abc"')
    assert not b.lines("Traceback")


def health_at(c):
    st = c.store()
    try:
        return [d["health_at"] for d in st.devices() if d["device"] == "dev-1"][0]
    finally:
        st.close()


def test_fast_sampling_does_not_starve_the_link(collector_proc, sim_board, fault_proxy):
    """Sampling every 1 ms (more than the board can read and emit: the sampler is always
    behind) with the link blackholed: the sampler must still let the link's tasks run, so the
    dead link is declared; once the proxy passes again the board reconnects and health
    arrives. (Before the fix the loop was starved: no LinkDead, no health, ever.)"""
    c = collector_proc({"dev-1": "tok-1"})
    fp = fault_proxy(c.port)
    b = sim_board("ws://127.0.0.1:%d/ws" % fp.port, sample_interval_s=0.001,
                  ping_interval_s=2, ping_timeout_s=2, outbox_flash_bytes=16384,
                  spill_after_s=1, health_interval_s=2)
    b.wait_for_line("INFO link: streaming to", timeout=60)
    c.wait_seqs("dev-1", 100, timeout=60)
    wait(lambda: health_at(c), 30, "first health")
    fp.set_mode("blackhole")
    t0 = time.monotonic()
    dead = len(b.lines("WARN link: stream:"))
    # the keepalive bound is 4 s; generous for a loaded host
    b.wait_for_line("WARN link: stream:", timeout=60, count=dead + 1)
    print("blackhole -> link declared dead after %.1f s" % (time.monotonic() - t0))
    h0 = health_at(c)
    fp.set_mode("pass")
    up = len(b.lines("INFO link: streaming to"))
    b.wait_for_line("INFO link: streaming to", timeout=60, count=up + 1)
    wait(lambda: health_at(c) > h0, 60, "health after the link came back")
    assert not b.lines("Traceback")
