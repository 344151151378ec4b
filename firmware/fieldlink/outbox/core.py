"""The outbox's pure core, no I/O (one module: each resident module costs heap).

`Ring`: the RAM readings, the newest ones, back to back as `text,` in one bytearray allocated
once (so a run of them is already the body of a batch), with an index of seq and offset per
reading in two arrays allocated with it.

`Ledger`: the numbering and what the server knows of it (next seq, the ack, readings in
flight, the seq and sent marks, pending gaps, the dropped count); the Outbox persists what
meta() hands it and reports back with saved()."""
from array import array

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):  # type: ignore[misc]  # the stubs' const is generic
        return x

# Bytes of the shortest reading proto.reading() makes, with its ",": 47 + 1 for
# '{"q":1,"ts":null,"up":0,"n":"","v":null,"u":""}'. The buffer holds at most
# nbytes // _MIN_N of them: the size of the index.
_MIN_N = const(48)


class Ring:
    """Readings in seq order in a sliding buffer, with no holes between them: the held ones
    are bytes [offset of the oldest, _tail), so a reading's length is where the next one
    starts. Slid to the front when the end is reached. Reading i (0 = oldest) is at index
    slot (head + i) % cap. Nothing here grows or is resized: adding, forgetting and
    removing allocate nothing. `n` readings are held, `used` bytes of them."""

    def __init__(self, nbytes):
        self.nbytes = nbytes
        self._buf = bytearray(nbytes)
        self._mv = memoryview(self._buf)
        self._tail = 0       # where the next reading is written
        cap = nbytes // _MIN_N + 1  # + 1: one to spare (and one for a tiny buffer)
        # seqs as 32-bit offsets from _base (the protocol's seqs take 64 bits; those held
        # at once lie closer together): half the index of 64-bit ones
        self._base = 0
        self._rq = array("I", bytes(4 * cap))
        if nbytes < 65536:   # offsets are < nbytes
            self._ro = array("H", bytes(2 * cap))
        else:
            self._ro = array("I", bytes(4 * cap))
        self.cap = cap
        self._rh = 0         # slot of the oldest reading
        self.n = 0           # readings held
        self.used = 0        # bytes of the readings held

    def seq(self, i):
        return self._base + self._rq[(self._rh + i) % self.cap]

    def length(self, i):
        """Bytes of reading i with its ","."""
        return self._end(i) - self._ro[(self._rh + i) % self.cap]

    def _end(self, i):
        """Where reading i ends (after its ",")."""
        return self._tail if i + 1 >= self.n else self._ro[(self._rh + i + 1) % self.cap]

    def add(self, seq, data):
        """Append a reading (bytes, without the ","); False if it does not fit in the buffer
        or the index (for proto.reading's output the buffer is full first)."""
        mv = self._mv
        size = len(mv)
        k = len(data) + 1
        c = self.n
        if self.used + k > size or c >= self.cap:
            return False
        ro = self._ro
        cap = self.cap
        h = self._rh
        rq = self._rq
        if not c:
            self._base = seq
            self._tail = 0
        d = seq - self._base
        if d > 0xFFFFFFFF:
            # the oldest held is the new base (once per 2**32 seqs, the held ones move down)
            b = self.seq(0) - self._base
            if d - b > 0xFFFFFFFF:
                return False  # held since 2**32 seqs ago: no room for this one's seq
            for i in range(c):
                rq[(h + i) % cap] -= b
            self._base += b
            d -= b
        t = self._tail
        if t + k > size:
            # Slide the held readings to the front (one memmove within the buffer).
            o = ro[h]
            mv[0:t - o] = mv[o:t]
            for i in range(c):
                ro[(h + i) % cap] -= o
            t -= o
        # The bytes first, then the index: a MemoryError (the slice's memoryview) leaves the
        # reading unstored.
        mv[t:t + k - 1] = data
        mv[t + k - 1] = 44  # ","
        p = (h + c) % cap
        rq[p] = d
        ro[p] = t
        self.n = c + 1
        self._tail = t + k
        self.used += k
        return True

    def forget(self, k):
        """Forget the k oldest readings."""
        if k >= self.n:
            self.n = 0
            self.used = 0
            self._tail = 0
            return
        h = self._rh
        cap = self.cap
        self.used -= self._ro[(h + k) % cap] - self._ro[h]
        self._rh = (h + k) % cap
        self.n -= k

    def count_to(self, q):
        """How many of the oldest readings have a seq <= q."""
        k = 0
        while k < self.n and self.seq(k) <= q:
            k += 1
        return k

    def remove(self, i):
        """Take reading i out: the i before it (in flight: at most a window of them) move up
        over it, bytes and index slots, so no hole is left."""
        rq = self._rq
        ro = self._ro
        cap = self.cap
        h = self._rh
        p = (h + i) % cap
        o = ro[h]
        s = ro[p]
        m = self._end(i) - s
        if i:
            mv = self._mv
            mv[o + m:s + m] = mv[o:s]
        self.used -= m
        while i:
            q = (h + i - 1) % cap
            rq[p] = rq[q]
            ro[p] = ro[q] + m
            p = q
            i -= 1
        self._rh = (h + 1) % cap
        self.n -= 1
        if not self.n:
            self._tail = 0

    def view(self, j, k, comma=0):
        """Readings j..k-1 as one memoryview of the buffer, joined by their commas, the last
        one's "," only if `comma` is 1: the body of a batch, or one reading for a write to
        flash (valid until the ring changes next)."""
        return self._mv[self._ro[(self._rh + j) % self.cap]:self._end(k - 1) - 1 + comma]

    def copy(self, i, raw):
        """Reading i as a new object (only for the batch being sent): str, or with `raw` the
        bytes with its "," (one copy: a view of it would be a second object)."""
        o = self._ro[(self._rh + i) % self.cap]
        e = self._end(i)
        if raw:
            return self._buf[o:e]
        return str(self._mv[o:e - 1], "utf-8")

META_V = 2  # meta v2: an epoch file was written with this state (v1: before epochs)


class Ledger:
    """`gaps` are [from, to, why, sent_on_this_connection]."""

    def __init__(self, boot, dropped, acked, gaps, next_seq, sent, block):
        """The state boot recovery found on flash (a fresh one: 1, 0, 0, [], 1, None, 0).
        `sent`: the stored sent mark (None: unknown, so everything handed out may be on
        the server); `block`: how far ahead of next_seq the seq mark is saved."""
        self.next_seq = next_seq
        self.boot = boot
        self.dropped = dropped   # cumulative since first boot
        self.acked = acked       # highest cumulative ack seen
        self.gaps = gaps         # type: list
        self.inflight = 0        # the first N readings of the queue are sent, not acked
        # Seqs below this may have been handed out: persisted a block ahead, so a power cut
        # never reuses a seq (the ones between the last stored and it become a `gap reboot`).
        self.mark = next_seq + block
        # No seq above this was ever sent: persisted before a batch goes past it, a block
        # ahead (one flash write per block of readings sent), so that after a power cut the
        # outbox still knows which flash segments the server cannot hold.
        if sent is None:
            sent = next_seq - 1
        self.sent_mark = sent
        # Highest seq that may be stored on the server without being acked yet (sent on this
        # or an earlier connection). Readings <= this are never dropped: the server may hold
        # them, and a `gap dropped` over them would make the dropped count inexact.
        self.sent_hi = max(min(sent, next_seq - 1), acked)
        self.dirty = False   # the last write of meta() failed: send nothing past it

    # ---- numbering ----

    def take(self, seq):
        """seq is handed out (pushed, kept or not). True if the seq mark must be moved
        ahead (and saved) before going on."""
        self.next_seq = seq + 1
        return self.next_seq > self.mark or self.dirty

    def set_mark(self, q):
        """No seq >= q was handed out: what the Outbox saves next."""
        self.mark = q

    def sent_due(self, q, block):
        """Before a batch up to seq q goes: False if the sent mark covers it already, else
        the mark is moved a block ahead (the caller saves it)."""
        if q <= self.sent_mark:
            return False
        self.sent_mark = q + block
        return True

    def sending(self, q, inflight):
        """A batch up to seq q goes: the first `inflight` readings are in flight."""
        self.inflight = inflight
        if q > self.sent_hi:
            self.sent_hi = q

    def land(self, k):
        """k readings in flight left the queue (acked, or dropped from under the cursor)."""
        self.inflight = self.inflight - k if self.inflight > k else 0

    # ---- persistence ----

    def meta(self):
        """What meta.json holds."""
        self.merge_gaps(False)
        return {"v": META_V, "boot": self.boot, "mark": self.mark, "dropped": self.dropped,
                "acked": self.acked, "sent": self.sent_mark,
                "gaps": [g[:3] for g in self.gaps]}

    def saved(self, ok):
        self.dirty = not ok

    # ---- gaps ----

    def add_gap(self, frm, to, why):
        gs = self.gaps
        g = gs[-1] if gs else None
        if g is not None and not g[3] and g[2] == why and g[1] + 1 == frm:
            g[1] = to
        else:
            gs.append([frm, to, why, False])  # (first: a MemoryError here counts nothing)
        if why == "dropped":
            self.dropped += to - frm + 1

    def merge_gaps(self, resend):
        """Adjacent gaps with the same why become one (sent ones too when `resend`: all are
        sent again on a new connection). Keeps meta.json and the gap list small when a slow
        link makes the outbox drop a segment at a time."""
        gs = self.gaps
        k = 1
        while k < len(gs):
            a = gs[k - 1]
            b = gs[k]
            if a[2] == b[2] and a[1] + 1 == b[0] and (resend or a[3] == b[3]):
                a[1] = b[1]
                gs.pop(k)
            else:
                k += 1

    # ---- the link ----

    def on_connect(self):
        """A new connection: nothing is in flight, every pending gap must be sent again."""
        self.inflight = 0
        for g in self.gaps:
            g[3] = False
        self.merge_gaps(True)

    def take_gaps(self):
        """Gaps not yet sent on this connection, as [(from, to, why)]; marks them sent."""
        out = []  # type: list[tuple[int, int, str]]
        for g in self.gaps:
            if not g[3]:
                g[3] = True
                out.append((g[0], g[1], g[2]))
        return out

    def ack(self, n, welcome):
        """Cumulative ack: every seq <= n is stored (or declared) on the server; with
        `welcome` (the ack in a welcome) it holds nothing above n either (it stores in
        order). True if the server knows seqs this device no longer remembers (flash
        wiped): the numbering continues above them (or new readings would be ignored as
        duplicates)."""
        if n > self.acked:
            self.acked = n
        if welcome:
            self.sent_hi = self.acked
        gs = self.gaps
        k = 0
        while k < len(gs):
            if gs[k][1] <= n:
                gs.pop(k)
            else:
                k += 1
        if n >= self.next_seq:
            self.next_seq = n + 1
            return True
        return False
