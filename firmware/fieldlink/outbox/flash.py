"""The outbox's flash segments: the oldest readings, spilled from RAM in segment files
`s<first>_<last>_<count>` (one reading per line, oldest first), reloaded for sending and
dropped for room. The Outbox loads this module while the flash holds readings (or to spill)
and drops it when it holds none: a board streaming with nothing spilled keeps none of it on
its heap. Every file operation goes through the store (outbox.DirStore)."""
from array import array

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):  # type: ignore[misc]  # the stubs' const is generic
        return x

from fieldlink import proto

# The oldest segments not loaded yet are listed in RAM, at most this many; the newer ones are
# only counted and found on flash again by their names when these are used up: RAM for the
# table is the same for a backlog of 30 segments or of 3000.
_WINDOW = const(16)
_NONE = array("Q")  # assigned over a segment's four entries in a table: removed in place


def name(first, last, count):
    """A segment's file name (zero-padded: names sort like the seqs)."""
    return "s%010d_%010d_%d" % (first, last, count)


def parse(n):
    """(first, last, count) from a segment's file name as name() makes it, else None. Seqs
    past ten digits have no leading zero (another name for the same segment would not be
    found by name())."""
    if n[:1] != "s" or n[-4:] == ".tmp":
        return None
    i = n.find("_")
    j = n.find("_", i + 1)
    if i < 11 or j - i < 11 or (i > 11 and n[1] == "0") or (j - i > 11 and n[i + 1] == "0") \
            or (len(n) - j > 2 and n[j + 1] == "0"):  # (a count is never zero-padded)
        return None
    try:
        return int(n[1:i]), int(n[i + 1:j]), int(n[j + 1:])
    except ValueError:
        return None


def scan(st, lo, k):
    """The k oldest segments in store st whose first seq is >= lo, flat: first, last, count,
    bytes for each."""
    out = array("Q")
    for n, size in st.entries():
        s = parse(n)
        if s is None or s[0] < lo:
            continue
        a = s[0]
        j = len(out)
        if j >= 4 * k and a > out[j - 4]:
            continue  # not among the k oldest
        while j and out[j - 4] > a:
            j -= 4
        if size is None:
            size = st.size(n)
        out[j:j] = array("Q", (a, s[1], s[2], size))
        if len(out) > 4 * k:
            out[4 * k:] = _NONE
    return out


def declared(acked, gaps, a, b):
    """True if every seq a..b is at or below the ack or in one of the gaps: a segment's
    file left by a failed removal after its drop (nothing in it may be sent or declared
    again)."""
    if a <= acked:
        a = acked + 1
    k = 0
    while a <= b and k < len(gaps):
        g = gaps[k]
        if g[0] <= a <= g[1]:
            a = g[1] + 1
            k = 0  # (the gaps are not always in order)
        else:
            k += 1
    return a > b


def index(st, n):
    """Segment n's seqs and the byte offset of each reading's line, oldest first."""
    qs = []
    offs = []
    o = 0
    with st.file(n, "rb") as f:
        while True:  # line by line: no segment-sized string on a fragmented heap
            ln = f.readline()
            if not ln:
                break
            if ln != b"\n":
                qs.append(proto.reading_seq(ln))
                offs.append(o)
            o += len(ln)
    return qs, offs


class Segments:
    """The flash side of the queue, older than RAM: the loaded head (per reading its seq and
    the byte offset of its line in its segment file: no texts; a batch's are read from the
    file when it is sent), then the segments not loaded yet: the oldest few listed flat in
    `_segs` (first, last, count, bytes), the newer ones only counted (`_sq` segments of `_sn`
    readings, all with first seq >= `_sfrom`). `used`: bytes on flash."""

    def __init__(self, store, limit, seg_bytes, used=0):
        self.store = store
        self.limit = limit
        self.seg_bytes = seg_bytes
        self.used = used
        self._hq = []        # type: list  # the head's seqs
        self._ho = []        # type: list  # and line offsets
        self._hsegs = []     # type: list  # [last, name, nbytes] of loaded segments
        self._segs = array("Q")  # (seqs: 64 bits)
        self._sq = 0
        self._sn = 0
        self._sfrom = 0
        self._dq = []        # type: list  # unlisted segments to drop next (drop_segment)

    # ---- counts ----

    def empty(self):
        return not self._segs and not self._sq and not self._hsegs

    def head(self):
        """Readings in the loaded head."""
        return len(self._hq)

    def unsent(self, i):
        """True if the queue's reading i is on flash (i: readings in flight)."""
        return i < len(self._hq) or bool(self._segs) or bool(self._sq)

    def held(self):
        n = len(self._hq) + self._sn
        segs = self._segs
        for j in range(2, len(segs), 4):
            n += segs[j]
        return n

    def first(self):
        """The oldest seq on flash, or 0 for none."""
        if not self._hq and not self._segs and self._sq:
            self.refill()  # (the listed segments are used up)
        if self._hq:
            return self._hq[0]
        if self._segs:
            return self._segs[0]
        return 0

    def adopt(self, segs, readings, used):
        """Boot: segments found on flash, counted, none listed yet (the first use lists the
        oldest)."""
        self._sq = segs
        self._sn = readings
        self.used += used

    def discard(self, count, size):
        """Boot removed the file of a counted segment (wholly acked or declared)."""
        self._sq -= 1
        self._sn -= count
        self.used -= size

    def refill(self):
        """The listed segments are used up: list the next oldest from flash (a MemoryError
        here changes nothing). If fewer are found than were counted, the count was off
        (files gone): it is set to what is there."""
        w = scan(self.store, self._sfrom, _WINDOW)
        k = len(w)
        sq = 0
        sn = 0
        if k >= 4 * _WINDOW:
            n = 0
            for j in range(2, k, 4):
                n += w[j]
            sq = max(self._sq - k // 4, 0)
            sn = max(self._sn - n, 0)
        self._segs.extend(w)  # (empty before: only called then)
        self._sq = sq
        self._sn = sn
        if k:
            self._sfrom = w[k - 3] + 1

    # ---- spilling, reloading, dropping ----

    def spill_chunk(self, ring, led):
        """The oldest RAM readings, up to seg_bytes, to one new segment; False if they
        cannot go (flash full of what the server may hold, or the write failed)."""
        n = 0
        size = 0
        while n < ring.n:
            k = ring.length(n)
            if n and size + k > self.seg_bytes:
                break
            size += k
            n += 1
        if n == 0 or size > self.limit:
            return False
        while self.used + size > self.limit:
            if not self.drop_segment(led):
                return False  # flash holds only what the server may have: keep it
        first = ring.seq(0)
        last = ring.seq(n - 1)
        nm = name(first, last, n)
        st = self.store
        try:
            # straight from the RAM buffer, reading by reading: no text or segment-sized
            # string on the heap
            with st.file(nm + ".tmp", "wb") as f:
                for i in range(n):
                    f.write(ring.view(i, i + 1))
                    f.write(b"\n")
            st.rename(nm + ".tmp", nm)
        except OSError:
            # flash full or failing: give the space back and keep the readings in RAM; the
            # caller drops the oldest (counted) instead of raising into the sampler
            st.remove(nm + ".tmp")
            return False
        # Where the chunk goes, built before anything changes: a MemoryError here leaves
        # the readings in RAM (the file goes again) instead of gone from RAM and the queue.
        head = led.inflight > len(self._hq)
        counted = False
        try:
            if head:
                # part of the chunk is in flight: it must stay at the front of the queue, so
                # it becomes a loaded head segment (no unloaded segment can exist here), its
                # readings found by their offsets in the file just written (RAM lengths
                # include the ",", the file has a newline in its place)
                qs = []
                offs = []
                o = 0
                for i in range(n):
                    qs.append(ring.seq(i))
                    offs.append(o)
                    o += ring.length(i)
                nq = self._hq + qs
                no = self._ho + offs
                hs = self._hsegs + [[last, nm, size]]
            elif not self._sq and len(self._segs) < 4 * _WINDOW:
                # listed (in place, and the last step that allocates: nothing below fails)
                self._segs.extend(array("Q", (first, last, n, size)))
            else:
                counted = True  # found on flash again when the listed ones are used up
        except MemoryError:
            st.remove(nm)
            raise
        self.used += size
        ring.forget(n)
        if counted:
            self._sq += 1
            self._sn += n
        else:
            self._sfrom = last + 1  # (what is older is listed, loaded or gone)
            if head:
                self._hq = nq
                self._ho = no
                self._hsegs = hs
        return True

    def _drop_head(self, led):
        """Drop the oldest loaded (head) segment none of whose readings is in flight or may
        be on the server: the head's segments are the oldest on flash, so they go before
        any listed one. A head segment that also holds readings the server may have is kept
        whole, like a listed segment across the mark: its file stays for those, and dropping
        its unsent rest would free nothing. False if none can go."""
        hq = self._hq
        hs = self._hsegs
        i = 0  # index in hq of segment x's first held reading
        for x in range(len(hs)):
            last = hs[x][0]
            j = i
            while j < len(hq) and hq[j] <= last:
                j += 1
            if i >= led.inflight and (i == j or hq[i] > led.sent_hi):
                break
            i = j
        else:
            return False
        # Declared before the readings leave the head: a MemoryError at a new gap leaves
        # them held. A run without holes is one gap.
        if j > i:
            if hq[j - 1] - hq[i] == j - 1 - i:
                led.add_gap(hq[i], hq[j - 1], "dropped")
            else:
                for k in range(i, j):
                    led.add_gap(hq[k], hq[k], "dropped")
        self._cut(i, j)
        s = hs.pop(x)
        self._drop_file(led, s[1], s[2])
        return True

    def _cut(self, i, j):
        """Head readings i..j-1 leave, seqs and offsets in step, by pops: they only shrink
        the lists, where `del x[i:j]` would build a slice object (an allocation: a
        MemoryError between the two deletes would leave them out of step)."""
        hq = self._hq
        ho = self._ho
        while j > i:
            hq.pop(i)
            ho.pop(i)
            j -= 1

    def drop_segment(self, led):
        """Drop the oldest flash segment the server cannot hold yet; False if none."""
        if self._drop_head(led):
            return True
        if not self._segs and self._sq:
            self.refill()
        segs = self._segs
        j = 0
        while j < len(segs) and segs[j] <= led.sent_hi:
            j += 4
        if j < len(segs):
            a = segs[j]
            b = segs[j + 1]
            c = segs[j + 2]
            size = segs[j + 3]
        elif self._sq:
            # Every listed segment may be on the server (at or below the sent mark, kept
            # after a reboot): the oldest of the unlisted ones above the mark goes, found on
            # flash. (Unlisted ones may be below it too: 16 segments are fewer than a
            # window's or a sent mark's block of readings when segments are small.)
            lo = self._sfrom
            if lo <= led.sent_hi:
                lo = led.sent_hi + 1
            # The oldest _WINDOW of them are listed once and kept in _dq ([_sfrom, lo, the
            # segments, _sq then]) for the drops that follow (every push on a full flash
            # asks): newer segments spilled meanwhile are newer than all of them. Listed
            # again when _sfrom or the mark moved, or when they are used up and more were
            # spilled since.
            dq = self._dq
            if not dq or dq[0] != self._sfrom or dq[1] != lo or \
                    (not dq[2] and dq[3] != self._sq):
                w = scan(self.store, lo, _WINDOW)
                if not w and lo == self._sfrom:
                    self._sq = self._sn = 0  # (the count was off: nothing there)
                dq = self._dq = [self._sfrom, lo, w, self._sq]
            w = dq[2]
            if not w:
                return False
            a = w[0]
            b = w[1]
            c = w[2]
            size = w[3]
            j = -1
        else:
            return False
        nm = name(a, b, c)
        # Declared before it leaves the list: a MemoryError between the two then leaves a
        # segment declared twice (counted, sent again), never one gone undeclared.
        if declared(led.acked, led.gaps, a, b):
            pass  # a file an earlier drop could not remove (_drop_file): not declared again
        elif c == b - a + 1:
            led.add_gap(a, b, "dropped")
        else:
            # the segment has holes (readings dropped from RAM earlier, already declared):
            # declare exactly the seqs it holds so the dropped count stays exact
            try:
                qs = index(self.store, nm)[0]
            except (OSError, ValueError):
                qs = None  # which seqs it held cannot be read: declared like a failed load
            if qs is None:
                led.add_gap(max(a, led.acked + 1), b, "reboot")
            else:
                for q in qs:
                    led.add_gap(q, q, "dropped")
        if j < 0:
            w[0:4] = _NONE  # (w: _dq's list, as above)
            self._sq -= 1
            self._sn -= c
            dq[3] = self._sq
        else:
            segs[j:j + 4] = _NONE
        self._drop_file(led, nm, size)
        return True

    def _drop_file(self, led, nm, size):
        """Remove the file of a segment just declared dropped. No meta write when that
        works: the drop is persisted with the next seq mark (or at the end of a spill), and
        a power cut before that is caught at boot (a hole, `gap reboot`). When the removal
        fails the file stays, and a boot that did not know of the drop would load it and
        send readings the server may have recorded as dropped. So then meta.json is saved
        before anything more is sent (the ledger's dirty flag): one write per failed
        removal, nothing on the usual path; boot then removes the segment (wholly
        declared), and load and drop skip it if that fails too (declared). The bytes
        count as freed all the same: a flash that keeps failing shows as failed writes
        (handled as a full filesystem), not as every segment dropped in turn for room that
        never comes."""
        if not self.store.remove(nm):
            led.saved(False)
        self.used -= size

    def next_batch(self, ring, led, max_n, window, raw=False):
        """Outbox.next_batch: the head (read from its segment files), segments loaded as it
        empties, then RAM. The readings as str, or with `raw` as bytes that end in one
        separator byte (the file's newline, the RAM buffer's comma): what the sender copies
        into its batch as they are, with no second copy of each reading."""
        room = window - led.inflight
        if room > max_n:
            room = max_n
        out = []  # type: list
        i = led.inflight
        while len(out) < room:
            hn = len(self._hq)
            if i < hn:
                k = self._read_run(led, i, room, out, raw)
                if k > 0:
                    i += k  # (else the rest of an unreadable segment left the head)
            elif self._segs or self._sq:
                try:
                    self.load_segment(led)
                except MemoryError:
                    # No block for the head's longer lists: send what is here, or wait for
                    # the acks in flight to shorten them, and load then. Only with neither
                    # is it the sender's failure.
                    if not out and i == 0:
                        raise
                    break
            elif i - hn < ring.n:
                out.append(ring.copy(i - hn, raw))
                i += 1
            else:
                break
        # (nothing above changed the queue but a load or an unreadable segment, each
        # complete in itself: a MemoryError leaves the cursor as it was)
        if out:
            j = i - 1
            hq = self._hq
            q = hq[j] if j < len(hq) else ring.seq(j - len(hq))
            return out, q, i
        return out, 0, i

    def _read_run(self, led, i, room, out, raw):
        """Head readings i.. of one segment, up to `room`, read from its file into `out`:
        their texts are on the heap only while a batch is built (read again after a
        reconnect: flash reads do not wear it). The count read, or -1 if the file was
        unreadable (its rest is declared and dropped)."""
        hq = self._hq
        q = hq[i]
        for s in self._hsegs:
            if s[0] >= q:
                break
        last = s[0]
        k = len(out)
        try:
            with self.store.file(s[1], "rb") as f:
                f.seek(self._ho[i])
                j = i
                while len(out) < room and j < len(hq) and hq[j] <= last:
                    t = f.readline()
                    if t[-1:] != b"\n":
                        raise ValueError  # the file is shorter than when it was indexed
                    if len(t) > 1:
                        if proto.reading_seq(t) != hq[j]:
                            raise ValueError
                        out.append(t if raw else str(t[:-1], "utf-8"))
                        j += 1
        except (OSError, ValueError):
            del out[k:]
            self._lose_head(led, i, last)
            return -1
        return len(out) - k

    def _lose_head(self, led, i, last):
        """Head readings i.. up to seq `last` (one segment's rest) cannot be read: declared
        (they can never be sent; an undeclared hole would stop the server's cumulative ack
        for good), then dropped from the head. Its file goes with the ack over the gap."""
        hq = self._hq
        j = i
        while j < len(hq) and hq[j] <= last:
            j += 1
        led.add_gap(hq[i], last, "reboot")  # (first: it may fail, the pops do not)
        self._cut(i, j)

    def load_segment(self, led):
        """The oldest unloaded segment into the head (what is above the ack): its seqs and
        where each reading starts in the file, no texts."""
        segs = self._segs
        if not segs:
            self.refill()
            if not segs:
                return  # (the count was off: set right by refill)
        a = segs[0]
        b = segs[1]
        size = segs[3]
        nm = name(a, b, segs[2])
        try:
            qs, offs = index(self.store, nm)  # a MemoryError here changes nothing
        except (OSError, ValueError):
            # unreadable: these seqs can never be sent, so declare them rather than leave a
            # hole that would stop the server's cumulative ack for good
            led.add_gap(max(a, led.acked + 1), b, "reboot")
            segs[0:4] = _NONE
            self.store.remove(nm)
            self.used -= size
            return
        # New lists first, then swapped in: a MemoryError midway must not leave the head's
        # seqs and offsets out of step (texts sent under the wrong seqs), nor the segment
        # both in the head and still listed (sent twice, the second time out of order).
        k = 0
        while k < len(qs) and qs[k] <= led.acked:
            k += 1
        if k < len(qs) and declared(led.acked, led.gaps, qs[k], b):
            k = len(qs)  # dropped, its file left (_drop_file): held by nothing
        nq = self._hq + qs[k:]
        no = self._ho + offs[k:]
        hs = self._hsegs + [[b, nm, size]]
        segs[0:4] = _NONE
        self._hq = nq
        self._ho = no
        self._hsegs = hs

    def ack(self, led, n):
        """Cumulative ack n: the head's readings it covers leave (and the cursor with them),
        then the segments it covers: loaded ones, then unloaded ones once the head is empty
        (they are behind it in the queue)."""
        hq = self._hq
        k = 0
        while k < len(hq) and hq[k] <= n:
            k += 1
        if k:
            self._cut(0, k)
            led.land(k)  # at once: what follows may fail (flash)
        self.forget(n)

    def forget(self, n):
        """Remove the segment files ack n covers (the file first: if that fails, the
        segment is still listed)."""
        hs = self._hsegs
        st = self.store
        while hs and hs[0][0] <= n:
            st.remove(hs[0][1])
            self.used -= hs.pop(0)[2]
        segs = self._segs
        while not self._hq:
            if not segs:
                if not self._sq:
                    break
                self.refill()  # (an ack over unlisted segments: at boot, from meta.json)
                if not segs:
                    break
            if segs[1] > n:
                break
            nm = name(segs[0], segs[1], segs[2])
            size = segs[3]
            segs[0:4] = _NONE
            self.used -= size
            st.remove(nm)  # (a file left by a failure here goes at the next boot)
