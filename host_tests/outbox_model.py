"""The outbox tests' model of the collector, their random campaign and what they read of the
outbox's parts, shared by the modules in host_tests/firmware/outbox/: runs on CPython and
MicroPython.
"""
import json

from fieldlink import proto
from fieldlink.outbox import DirStore


def rd(q, pad=0):
    """Reading q as proto.reading makes it (pad: that many more bytes in its error field)."""
    return proto.reading(q, None, q * 100, "env.temperature", 20 + q % 7, "C",
                         "x" * pad if pad else None)


def fill(ob, n, pad=0):
    """n readings pushed into outbox ob."""
    for _ in range(n):
        ob.push(ob.next_seq, rd(ob.next_seq, pad))


def seq_of(text):
    return json.loads(text)["q"]


def seqs(texts):
    return [seq_of(t) for t in texts]


class FullFS(DirStore):
    """A store on a filesystem that is full while `full`: every write fails with ENOSPC."""

    full = False

    def file(self, name, mode="r"):
        if self.full and ("w" in mode or "a" in mode):
            raise OSError(28)
        return DirStore.file(self, name, mode)


def lcg(seed):
    """A seeded generator of ints in [0, n) that is the same on both interpreters."""
    state = [seed]

    def rand(n):
        state[0] = (state[0] * 1103515245 + 12345) & 0x7FFFFFFF
        return (state[0] >> 8) % n
    return rand


class Server:
    """The collector's rules in miniature: store each seq once, cumulative ack from the store
    and the gaps, resends ignored; a seq declared dropped is never sent nor stored. One byte
    of state per seq above `base` (small on MicroPython); `dup` counts resends of stored
    seqs."""

    STORED, DROPPED, REBOOT = 1, 2, 3

    def __init__(self, size=8192, base=0):
        self.base = base
        self.state = bytearray(size)
        self.ack = base
        self.dup = 0

    def at(self, q):
        return self.state[q - self.base]

    def gap(self, frm, to, why):
        mark = self.DROPPED if why == "dropped" else self.REBOOT
        for q in range(max(frm, self.base + 1), to + 1):
            i = q - self.base
            # a reading declared dropped must never have been stored
            assert not (mark == self.DROPPED and self.state[i] == self.STORED), q
            if not self.state[i]:
                self.state[i] = mark
        while self.state[self.ack + 1 - self.base]:  # (a gap moves the ack too)
            self.ack += 1

    def batch(self, texts):
        for t in texts:
            q = json.loads(t)["q"]
            assert q > self.base, q  # (a seq cut to its low 32 bits would land here)
            i = q - self.base
            if self.state[i] == self.STORED:
                self.dup += 1
            elif q > self.ack:
                assert self.state[i] != self.DROPPED, q  # a dropped seq is never sent
                self.state[i] = self.STORED
        while self.state[self.ack + 1 - self.base]:
            self.ack += 1
        return self.ack

    def count(self, what):
        n = 0
        for x in self.state:
            if x == what:
                n += 1
        return n


def drain_to(ob, srv, batch=None):
    """A good link until the outbox is empty: pending gaps, batches (`batch(ob)`, else
    next_batch(20, 64)), acks."""
    ob.on_connect()
    ob.welcome(srv.ack)
    for _ in range(100000):
        for g in ob.pending_gaps():
            srv.gap(*g)
        b = batch(ob) if batch else ob.next_batch(20, 64)
        if not b:
            break
        ob.ack(srv.batch(b))


def campaign(ob, new, srv, rand, steps, power_cuts, reading, up=False):
    """Random pushes, sends, acks (some lost), link drops, spills and (optionally) power cuts
    (`new()` boots an outbox on the same flash) against srv; (the outbox at the end, the last
    seq pushed)."""
    produced = 0
    for _ in range(steps):
        op = rand(100)
        if op < 58:
            ob.push(ob.next_seq, reading(ob.next_seq, rand(30)))
            produced = ob.next_seq - 1
        elif op < 70 and up:
            for g in ob.pending_gaps():
                srv.gap(*g)
            a = srv.batch(ob.next_batch(1 + rand(4), 16))
            if rand(3):
                ob.ack(a)                           # the ack may be lost on the way
        elif op < 78:
            up = not up                             # link up / down
            if up:
                ob.on_connect()
                ob.welcome(srv.ack)
        elif op < 82:
            ob.spill(True)                          # link down long
        elif op < 84 and power_cuts:
            ob = None                               # kill -9: RAM gone (and its heap,
            ob = new()                              # before the new one is allocated)
            up = False
    return ob, produced


def flash_side(ob):
    """The outbox's flash.Segments while it is loaded (while the flash holds readings), else
    None: for tests that check its table and head."""
    return ob._fl


def flash_used(ob):
    """Bytes of readings on the outbox's flash."""
    fl = flash_side(ob)
    return ob._fl_used if fl is None else fl.used


def batch_text(ob, max_n, window):
    """What the app puts between a batch message's brackets (next_batch_view), as text:
    the readings joined with ",", "" for nothing."""
    v = ob.next_batch_view(max_n, window)
    if isinstance(v, list):
        return ",".join([str(t[:-1], "utf-8") for t in v])
    return str(v, "utf-8") if v else ""
