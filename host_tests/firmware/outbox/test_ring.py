# dual: runs on CPython and on MicroPython
"""ring.Ring, the outbox's RAM: readings back to back as `text,` in one buffer with no holes,
an index of seq and offset per reading, sliding to the front, removal from the middle."""
from fieldlink.outbox.core import Ring


def r(q, pad=0):
    """A reading-like text of 20 + pad bytes."""
    return ('{"q":%d,"v":%s}' % (q, "1" * (9 - len(str(q)) + pad))).encode()


def held(ring):
    return [ring.seq(i) for i in range(ring.n)]


def test_readings_lie_back_to_back_with_their_commas():
    g = Ring(256)
    for q in (1, 2, 3):
        assert g.add(q, r(q))
    assert g.n == 3 and g.used == 3 * 21 and held(g) == [1, 2, 3]
    assert bytes(g.view(0, 3)) == b",".join([r(1), r(2), r(3)])
    assert bytes(g.view(1, 2)) == r(2) and bytes(g.view(1, 2, 1)) == r(2) + b","


def test_a_view_covers_the_readings_asked_for():
    g = Ring(256)
    for q in range(1, 6):
        g.add(q, r(q))
    assert bytes(g.view(1, 3)) == r(2) + b"," + r(3)


def test_a_reading_that_does_not_fit_is_refused_and_changes_nothing():
    g = Ring(64)
    assert g.add(1, r(1)) and g.add(2, r(2))
    assert not g.add(3, r(3))                         # 3 * 21 > 64 - 21
    assert held(g) == [1, 2] and g.used == 42


def test_the_index_bounds_short_readings():
    g = Ring(96)                                      # 96 // 48 + 1 = 3 slots
    assert g.cap == 3
    for q in (1, 2, 3):
        assert g.add(q, b"x")
    assert not g.add(4, b"x") and g.used == 6         # bytes to spare, no slot


def test_forget_and_count_to():
    g = Ring(256)
    for q in range(1, 6):
        g.add(q, r(q))
    assert g.count_to(0) == 0 and g.count_to(3) == 3 and g.count_to(9) == 5
    g.forget(3)
    assert held(g) == [4, 5] and g.used == 42
    g.forget(2)
    assert g.n == 0 and g.used == 0


def test_the_end_reached_slides_the_readings_to_the_front_in_order():
    g = Ring(300)                                     # room for six of 49 bytes
    for q in range(1, 7):
        assert g.add(q, r(q, 28))
    g.remove(1)                                       # 2 goes (1 moves up over it)
    g.forget(1)                                       # and 1
    assert held(g) == [3, 4, 5, 6]
    assert g.add(7, r(7, 28))                         # past the end: 3-6 slide to the front
    assert held(g) == [3, 4, 5, 6, 7]
    assert bytes(g.view(0, 5)) == b",".join([r(q, 28) for q in (3, 4, 5, 6, 7)])


def test_remove_keeps_the_order_across_the_wrap():
    g = Ring(96)                                      # three slots
    for q in (1, 2):
        g.add(q, b"a")
    g.forget(2)                                       # the head at slot 2
    for q in (3, 4, 5):
        assert g.add(q, b"b")                         # slots 2, 0, 1: wrapped
    g.remove(1)                                       # 4 goes; 3 moves up a slot
    assert held(g) == [3, 5] and g.used == 4
    assert g.add(6, b"c") and held(g) == [3, 5, 6]


def test_remove_leaves_no_hole():
    g = Ring(256)
    for q in range(1, 5):
        g.add(q, r(q))
    g.remove(2)                                       # 1 and 2 move up over 3
    assert held(g) == [1, 2, 4] and g.used == 63
    assert bytes(g.view(0, 3)) == b",".join([r(1), r(2), r(4)])
    assert [bytes(g.view(i, i + 1)) for i in range(3)] == [r(1), r(2), r(4)]
    g.forget(1)
    assert bytes(g.view(0, 2)) == r(2) + b"," + r(4) and g.used == 42


def test_seqs_past_32_bits_are_kept():
    g = Ring(256)
    q = 2 ** 32 + 5
    g.add(q, r(7))
    assert g.seq(0) == q and g.count_to(q - 1) == 0 and g.count_to(q) == 1


def test_seqs_held_across_a_2_32_span_are_rebased():
    g = Ring(256)
    g.add(5, r(1))
    g.add(6, r(2))
    g.forget(1)                                       # 6 is the oldest now
    q = 5 + 2 ** 32                                   # past 32 bits of offset from 5
    assert g.add(q, r(3))                             # from 6 (the oldest) it is not
    assert held(g) == [6, q] and g.count_to(q - 1) == 1
    assert not g.add(6 + 2 ** 32, r(4))               # 6 held: no 32-bit offset for it
    assert held(g) == [6, q] and g.n == 2
