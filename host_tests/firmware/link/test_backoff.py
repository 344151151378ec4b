# dual: runs on CPython and on MicroPython
"""Backoff: full-jitter delays stay inside [0, min(cap, base*2**n)]; reset() starts over."""
from dualsupport import raises

from fieldlink.link import Backoff


def lcg(seed):
    # A seeded generator that gives the same sequence on both interpreters
    # (random.seed does not), so a failure here reproduces everywhere.
    state = [seed]

    def rand():
        state[0] = (state[0] * 1103515245 + 12345) & 0x7FFFFFFF
        return state[0] / 0x80000000
    return rand


def test_delays_inside_full_jitter_bounds():
    for seed in range(5):
        b = Backoff(0.5, 30, 60, lcg(seed))
        for n in range(40):
            bound = min(30, 0.5 * 2 ** n)
            assert b.bound() == bound
            d = b.next_delay()
            assert 0 <= d <= bound, (n, d, bound)


def test_jitter_uses_the_whole_range():
    b = Backoff(1, 8, 60, lcg(7))
    b.attempt = 3  # bound 8
    ds = []
    for _ in range(200):
        b.attempt = 3
        ds.append(b.next_delay())
    assert min(ds) < 1 and max(ds) > 7  # not a fixed delay, not only the top


def test_rand_extremes_map_to_range_ends():
    b = Backoff(2, 10, 60, lambda: 0.0)
    assert b.next_delay() == 0
    b = Backoff(2, 10, 60, lambda: 0.999999)
    b.attempt = 10
    d = b.next_delay()
    assert 9.99 < d < 10


def test_failures_in_a_row_grow_the_range_reset_starts_over():
    b = Backoff(1, 64, 30, lambda: 1.0)
    assert [b.next_delay() for _ in range(3)] == [1, 2, 4]
    assert b.attempt == 3
    b.reset()  # the link was stable (classify: RETRY)
    assert b.next_delay() == 1
    assert b.next_delay() == 2


def test_cap_reached_and_held():
    b = Backoff(1, 5, 30, lambda: 1.0)
    ds = [b.next_delay() for _ in range(8)]
    assert ds == [1, 2, 4, 5, 5, 5, 5, 5]
    b.attempt = 10000  # no overflow or slow loop with a huge exponent
    assert b.bound() == 5


def test_penalty_is_the_cap_and_counts():
    b = Backoff(1, 60, 30, lambda: 0.0)
    assert b.penalty() == 60
    assert b.attempt == 1
    b.reset()
    assert b.attempt == 0


def test_bad_parameters_refused():
    raises(ValueError, Backoff, 0, 10, 1, lambda: 0.5)
    raises(ValueError, Backoff, 5, 1, 1, lambda: 0.5)
