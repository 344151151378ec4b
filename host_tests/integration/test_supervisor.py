"""The link supervisor's behaviour, observed through real processes: the firmware on the
virtual board, the collector, and the fault proxy between them. Times come from the board's
log lines, stamped as they appear (soak.LineWatch); the bounds are what the design promises
plus generous slack for a loaded machine, never a speed target."""
import re
import time

import pytest

from fieldlink_tools.soak import LineWatch

DEV, TOK = "dev-1", "tok-1"
RETRY = re.compile(r"retry in ([0-9.]+) s")
SLACK_S = 5.0   # a shared, loaded test machine


@pytest.fixture
def watch():
    made = []

    def make(board):
        w = LineWatch(board.log_path)
        made.append(w)
        return w

    yield make
    for w in made:
        w.close()


def url_of(fp):
    return "ws://127.0.0.1:%d/ws" % fp.port


def tail(b):
    return "\nboard log tail:\n" + "\n".join(b.lines()[-30:])


def more_stored(c, n, timeout=30):
    have = len(c.seqs(DEV))
    c.wait_seqs(DEV, have + n, timeout=timeout)


def test_blackhole_is_declared_dead_within_the_keepalive_bound(
        collector_proc, sim_board, fault_proxy, watch):
    c = collector_proc({DEV: TOK})
    fp = fault_proxy(c.port)
    interval, timeout = 2, 1
    b = sim_board(url_of(fp), ping_interval_s=interval, ping_timeout_s=timeout)
    w = watch(b)
    w.wait("INFO link: streaming to", timeout=60)
    c.wait_seqs(DEV, 10, timeout=60)

    t0 = time.monotonic()
    fp.set_mode("blackhole")      # half-open: the socket stays up, nothing comes back
    bound = interval + timeout + 1
    t_dead, line = w.wait("WARN link: stream:", t0, timeout=bound + SLACK_S + 10)[0]
    took = t_dead - t0
    print("blackhole -> declared dead after %.2f s (bound %d s)" % (took, bound))
    assert "LinkDead" in line, line
    assert took <= bound + SLACK_S, "declared dead after %.1f s%s" % (took, tail(b))

    fp.set_mode("pass")
    w.wait("INFO link: streaming to", t_dead, timeout=30)
    more_stored(c, 10)
    assert b.running and not b.lines("Traceback")


def test_backoff_delays_stay_in_full_jitter_bounds_and_reset_after_a_stable_link(
        collector_proc, sim_board, fault_proxy, watch):
    c = collector_proc({DEV: TOK})
    fp = fault_proxy(c.port)
    port = c.port
    c.stop()      # the proxy accepts, finds no collector and aborts: every attempt fails
    base, cap, stable = 0.2, 1.6, 2
    b = sim_board(url_of(fp), backoff_base_s=base, backoff_max_s=cap, stable_after_s=stable)
    w = watch(b)
    fails = w.wait("WARN link: connect:", timeout=60, count=7)
    delays = [float(RETRY.search(ln).group(1)) for _, ln in fails]
    for n, d in enumerate(delays):          # delay n uniform in [0, min(cap, base * 2**n)]
        assert 0 <= d <= min(cap, base * 2 ** n) + 0.05, (n, delays)
    assert len(set(delays)) > 1, delays     # jitter, not a fixed delay
    assert max(delays[3:]) > base, delays   # the bound grew (P(all four <= base) = 1/8**4)
    # the board waits what it says before trying again
    for (t1, _), (t2, _), d in zip(fails, fails[1:], delays):
        assert t2 - t1 >= d - 0.1, (t2 - t1, d)

    c.start()                               # same port behind the proxy
    assert c.port == port
    t_up = w.wait("INFO link: streaming to", timeout=30)[0][0]
    more_stored(c, 5)
    while time.monotonic() < t_up + stable + 0.5:   # the link stays up past stable_after_s
        time.sleep(0.1)
    t1 = time.monotonic()
    fp.reset()
    _, ln = w.wait("WARN link: stream:", t1, timeout=20)[0]
    d = float(RETRY.search(ln).group(1))
    assert d <= base + 0.05, "backoff not reset after a stable link: %s" % ln
    w.wait("INFO link: streaming to", t1, timeout=30)
    assert not b.lines("Traceback")


def test_refused_device_is_paced_as_the_server_sees_it(collector_proc, sim_board, fault_proxy):
    c = collector_proc({DEV: TOK})
    fp = fault_proxy(c.port)
    cap = 1.0
    # at full speed (0.05 s base) a refused board would try ~10 times a second
    b = sim_board(url_of(fp), token="wrong", backoff_base_s=0.05, backoff_max_s=cap)
    deadline = time.monotonic() + 30
    while len(fp.accept_times) < 4:
        assert time.monotonic() < deadline, "fewer than 4 attempts in 30 s" + tail(b)
        time.sleep(0.05)
    ts = fp.accept_times[:4]
    spacing = [t2 - t1 for t1, t2 in zip(ts, ts[1:])]
    assert all(s >= cap - 0.1 for s in spacing), spacing   # waits backoff_max_s each time
    assert len(b.lines("refused (401)")) >= 3
    assert c.seqs(DEV) == []
    assert b.running and not b.lines("Traceback")


def test_wifi_down_ends_the_link_and_it_comes_back(collector_proc, sim_board, watch):
    c = collector_proc({DEV: TOK})
    b = sim_board(c.url, wifi_timeout_s=1)
    w = watch(b)
    w.wait("INFO link: streaming to", timeout=60)
    c.wait_seqs(DEV, 5, timeout=60)
    t0 = time.monotonic()
    b.set_knobs(wifi="down")
    t_lost, line = w.wait("WARN link:", t0, timeout=15)[0]
    assert "Wi-Fi lost" in line, line
    w.wait("WARN link: wifi:", t0, timeout=30)      # association fails while it is down
    b.set_knobs(wifi="up")
    w.wait("INFO link: streaming to", t_lost, timeout=30)
    more_stored(c, 10)
    # nothing sampled while Wi-Fi was down was lost
    seqs = c.seqs(DEV)
    assert seqs == list(range(1, len(seqs) + 1))
    assert not b.lines("Traceback")
