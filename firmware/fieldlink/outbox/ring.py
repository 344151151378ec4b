"""The outbox's RAM ring: the newest readings, back to back as `text,` in one bytearray
allocated once (so a run of them is already the body of a batch), with an index of seq and
offset per reading in two arrays allocated with it. Pure: no I/O."""
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

    def run(self, j, room):
        """End index k of the readings j.. to send together, at most `room` of them (j < n,
        room > 0)."""
        k = j + room
        return k if k < self.n else self.n

    def view(self, j, k):
        """Readings j..k-1 as one memoryview of the buffer, joined by their commas, the last
        one cut: valid until the ring changes next."""
        return self._mv[self._ro[(self._rh + j) % self.cap]:self._end(k - 1) - 1]

    def item(self, i, comma):
        """Reading i as a memoryview of the buffer, with its "," if `comma` is 1: for a
        write to flash or a copy into a batch (valid until the ring changes next)."""
        return self._mv[self._ro[(self._rh + i) % self.cap]:self._end(i) - 1 + comma]

    def copy(self, i, raw):
        """Reading i as a new object (only for the batch being sent): str, or with `raw` the
        bytes with its "," (one copy: a view of it would be a second object)."""
        o = self._ro[(self._rh + i) % self.cap]
        e = self._end(i)
        if raw:
            return self._buf[o:e]
        return str(self._mv[o:e - 1], "utf-8")
