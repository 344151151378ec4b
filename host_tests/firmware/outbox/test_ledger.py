# dual: runs on CPython and on MicroPython
"""ledger.Ledger, the outbox's numbering: next seq, the seq and sent marks, readings in
flight, the cumulative ack, gaps (merged, resent per connection, counted when dropped)."""
from fieldlink.outbox.core import META_V, Ledger


def fresh(block=16):
    return Ledger(1, 0, 0, [], 1, None, block)


def test_fresh_state():
    led = fresh()
    assert (led.next_seq, led.boot, led.dropped, led.acked, led.gaps) == (1, 1, 0, 0, [])
    assert led.mark == 17 and led.sent_mark == 0 and led.sent_hi == 0 and not led.dirty


def test_take_says_when_the_mark_must_move():
    led = fresh(block=4)
    assert not led.take(1) and led.next_seq == 2
    led.set_mark(3)
    assert not led.take(2)                            # next 3: not past the mark
    assert led.take(3)                                # next 4 > 3
    led.set_mark(led.next_seq + 4)
    assert not led.take(4)
    led.saved(False)                                  # a failed write: due at every take
    assert led.take(5) and led.dirty
    led.saved(True)
    assert not led.take(6)


def test_sent_mark_moves_a_block_ahead():
    led = fresh(block=10)
    assert led.sent_due(3, 10) and led.sent_mark == 13
    assert not led.sent_due(13, 10)
    assert led.sent_due(14, 10) and led.sent_mark == 24


def test_in_flight_and_sent_hi():
    led = fresh()
    led.sending(5, 5)
    assert led.inflight == 5 and led.sent_hi == 5
    led.sending(3, 7)                                 # (sent_hi never goes back)
    assert led.inflight == 7 and led.sent_hi == 5
    led.land(3)
    assert led.inflight == 4
    led.land(9)
    assert led.inflight == 0


def test_dropped_gaps_count_and_adjacent_ones_join():
    led = fresh()
    led.add_gap(3, 3, "dropped")
    led.add_gap(4, 6, "dropped")
    led.add_gap(7, 7, "reboot")
    assert led.gaps == [[3, 6, "dropped", False], [7, 7, "reboot", False]]
    assert led.dropped == 4


def test_gaps_go_once_per_connection_and_until_acked():
    led = fresh()
    for q in range(1, 7):
        led.take(q)
    led.add_gap(3, 4, "dropped")
    assert led.take_gaps() == [(3, 4, "dropped")] and led.take_gaps() == []
    led.add_gap(5, 5, "dropped")                      # after a sent one: a gap of its own
    assert led.take_gaps() == [(5, 5, "dropped")]
    led.on_connect()                                  # all again, merged
    assert led.inflight == 0 and led.take_gaps() == [(3, 5, "dropped")]
    assert not led.ack(4, False)                      # covers part of it: kept
    assert len(led.gaps) == 1
    led.ack(5, False)
    assert led.gaps == [] and led.acked == 5


def test_an_ack_past_next_seq_moves_the_numbering():
    led = fresh()
    led.take(1)
    assert not led.ack(1, False) and led.next_seq == 2
    assert led.ack(40, False) and led.next_seq == 41 and led.acked == 40


def test_welcome_forgets_what_was_sent_above_its_ack():
    led = fresh()
    led.sending(9, 9)
    led.ack(4, True)
    assert led.sent_hi == 4
    led.ack(3, False)                                 # an older ack changes nothing
    assert led.acked == 4


def test_meta_is_the_persisted_state():
    led = Ledger(3, 2, 10, [[11, 12, "dropped", True], [13, 13, "dropped", False]], 20, 25,
                 16)
    m = led.meta()
    assert m == {"v": META_V, "boot": 3, "mark": 36, "dropped": 2, "acked": 10, "sent": 25,
                 "gaps": [[11, 12, "dropped"], [13, 13, "dropped"]]}


def test_restored_sent_mark():
    # none stored (older firmware): everything handed out may be on the server
    led = Ledger(2, 0, 5, [], 30, None, 16)
    assert led.sent_mark == 29 and led.sent_hi == 29 and led.mark == 46
    led = Ledger(2, 0, 5, [], 30, 12, 16)             # stored: only up to it
    assert led.sent_mark == 12 and led.sent_hi == 12
    led = Ledger(2, 0, 5, [], 30, 3, 16)              # never below the ack
    assert led.sent_hi == 5
