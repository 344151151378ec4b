# dual: runs on CPython and on MicroPython
"""classify(): what a failure means for the link. 401/403 refused; a MemoryError reboots only
after NO_HEAP_REBOOT attempts in a row on a boot that connected before; a link lost after a
stable stretch starts the backoff over; everything else backs off further."""
from fieldlink.link import (BACKOFF, NO_HEAP_REBOOT, REBOOT, REFUSED, RETRY, LinkFailure,
                            classify)
from fieldlink.proto import ProtoError
from fieldlink.ws.errors import ConnectionClosed, HandshakeError, LinkDead

STABLE = 30


def test_401_and_403_are_refused_other_statuses_back_off():
    for status in (401, 403):
        assert classify(HandshakeError(status, "no"), None, STABLE, 0, True) == REFUSED
        assert classify(HandshakeError(status, "no"), None, STABLE, 0, False) == REFUSED
    for status in (None, 400, 404, 500, 503):  # 503: the server is full, a retry may fit
        assert classify(HandshakeError(status, "x"), None, STABLE, 0, True) == BACKOFF


def test_network_and_protocol_failures_back_off():
    for e in (OSError(104, "ECONNRESET"), ConnectionClosed(1006, "lost"), LinkDead("no pong"),
              ProtoError(1008, "expected welcome"), LinkFailure("no welcome"),
              ValueError("a bug somewhere")):
        assert classify(e, None, STABLE, 0, True) == BACKOFF, e
        assert classify(e, STABLE - 0.5, STABLE, 0, True) == BACKOFF, e


def test_a_link_lost_after_a_stable_stretch_starts_over():
    e = ConnectionClosed(1001, "going away")
    assert classify(e, STABLE, STABLE, 0, True) == RETRY
    assert classify(e, 7 * 24 * 3600, STABLE, 0, True) == RETRY  # a week up
    assert classify(e, 2, STABLE, 0, True) == BACKOFF  # accepts and drops at once: grows
    assert classify(e, None, STABLE, 0, True) == BACKOFF  # never streamed


def test_no_heap_reboots_only_after_enough_attempts_on_a_boot_that_connected():
    e = MemoryError("memory allocation failed, allocating 234 bytes")
    for n in range(1, NO_HEAP_REBOOT):
        assert classify(e, None, STABLE, n, True) == BACKOFF, n
    assert classify(e, None, STABLE, NO_HEAP_REBOOT, True) == REBOOT
    assert classify(e, None, STABLE, NO_HEAP_REBOOT + 5, True) == REBOOT
    # a boot that never connected: a reset gives it no more heap, only a reset loop
    assert classify(e, None, STABLE, NO_HEAP_REBOOT + 5, False) == BACKOFF
    # the count is of MemoryErrors: another failure after them does not reboot
    assert classify(OSError(113, "EHOSTUNREACH"), None, STABLE, NO_HEAP_REBOOT, True) == BACKOFF


def test_a_no_heap_failure_right_after_a_stable_link_starts_over():
    e = MemoryError()
    assert classify(e, STABLE + 1, STABLE, 1, True) == RETRY


def test_verdicts_are_distinct():
    assert len(set((RETRY, BACKOFF, REFUSED, REBOOT))) == 4
