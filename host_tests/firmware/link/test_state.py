# dual: runs on CPython and on MicroPython
"""The link's state table: every state is reached and left, every failure leads to BACKOFF,
BACKOFF's timer leads back to Wi-Fi, and nothing else is a transition."""
from fieldlink.link import (E_FAIL, E_OK, E_REFUSED, E_TIMER, S_BACKOFF, S_CONNECT, S_HELLO,
                            S_STREAM, S_WIFI, STATE_NAMES, TRANSITIONS, next_state)

STATES = (S_WIFI, S_CONNECT, S_HELLO, S_STREAM, S_BACKOFF)
EVENTS = (E_OK, E_FAIL, E_REFUSED, E_TIMER)
# the table's entries as (state, event, next state)
TABLE = [(t >> 8, t >> 4 & 15, t & 15) for t in TRANSITIONS]


def test_the_happy_path_reaches_streaming():
    st = S_WIFI
    for want in (S_CONNECT, S_HELLO, S_STREAM):
        st = next_state(st, E_OK)
        assert st == want, STATE_NAMES[st]
    assert next_state(S_STREAM, E_OK) is None  # streaming ends only by failing


def test_every_failure_backs_off_and_the_timer_starts_over():
    for st in (S_WIFI, S_CONNECT, S_HELLO, S_STREAM):
        assert next_state(st, E_FAIL) == S_BACKOFF, STATE_NAMES[st]
    assert next_state(S_CONNECT, E_REFUSED) == S_BACKOFF
    assert next_state(S_BACKOFF, E_TIMER) == S_WIFI


def test_nothing_else_is_a_transition():
    listed = [(s, e) for s, e, _ in TABLE]
    for st in STATES:
        for ev in EVENTS:
            if (st, ev) not in listed:
                assert next_state(st, ev) is None, (st, ev)
    assert next_state(S_BACKOFF, E_FAIL) is None  # backoff cannot fail: only its timer ends it
    assert next_state(S_WIFI, E_REFUSED) is None  # only the server's handshake refuses
    assert next_state(len(STATES), E_OK) is None


def test_every_entry_is_what_next_state_answers():
    for s, e, n in TABLE:
        assert next_state(s, e) == n, (s, e, n)


def test_the_table_is_consistent():
    listed = [(s, e) for s, e, _ in TABLE]
    assert len(listed) == len(set(listed))  # one next state per (state, event)
    assert len(STATE_NAMES) == len(STATES) and len(set(STATE_NAMES)) == len(STATES)
    assert sorted(STATES) == list(range(len(STATES)))  # the names index by state
    for s, e, n in TABLE:
        assert s in STATES and n in STATES and e in EVENTS
    for x in STATES + EVENTS:
        assert 0 <= x < 16  # each field of an entry has 4 bits
    assert len(TABLE) == len(TRANSITIONS)
    # every state is entered and left
    assert set(n for _, _, n in TABLE) == set(STATES)
    assert set(s for s, _, _ in TABLE) == set(STATES)
