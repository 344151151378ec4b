"""The outbox: every reading is kept until the server acknowledges it (docs/protocol.md).

Bounded in bytes. New readings go to RAM: one bytearray of `ram_bytes`, allocated once, the
readings in it back to back as `text,` (so a run of them is already the body of a batch), a
sliding buffer compacted in place when its end is reached. Its index (seq, offset, length per
reading) is a ring of three arrays allocated with it, bounded by the shortest reading. No
per-reading object stays on the heap and nothing grows with the backlog, so the heap does not
fragment under load, nor while a backlog drains after a reconnect. When RAM is full or the link is down long, the
oldest RAM readings are spilled to flash in batched segment writes (a few KB each: flash wears
out). Flash segments are always older than RAM, so the queue is: loaded head, flash segments,
RAM. When everything is full the oldest readings are dropped, counted, and declared with a
`gap dropped`. The seq high-water mark is persisted in blocks; after a power cut the seqs that
may have died with RAM are declared with a `gap reboot`. The epoch (docs/protocol.md "Epochs")
names this numbering: made when the flash holds no state, written once to its own file.

`Outbox` is bookkeeping only. Its flash side (boot recovery, segment spill/reload/drop, the
epoch file) is in `outbox_flash`, imported when needed and dropped again once the flash holds
no readings: a board streaming with nothing spilled keeps only this module on its heap. Files
go through `DirStore` (or an object with the same methods), so tests drive it on CPython and
MicroPython alike.
"""
import binascii
import json
import os
import sys
from array import array

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):  # type: ignore[misc]  # the stubs' const is generic
        return x

_SEQ_BLOCK = const(256)   # persist the seq mark once per this many readings
_SEG_BYTES = const(2048)  # target size of one flash write
_META_V = const(2)        # meta v2: an epoch file was written with this state (v1: before epochs)
# Bytes of the shortest reading proto.reading() makes, with its ",": 47 + 1 for
# '{"q":1,"ts":null,"up":0,"n":"","v":null,"u":""}' (seq 1, no time, empty name and unit, null
# value). The RAM buffer holds at most ram_bytes // _MIN_N readings: the size of its index.
_MIN_N = const(48)


class DirStore:
    """The outbox's directory on flash. Every file is written whole to a temporary name and
    renamed into place, so a power cut mid-write leaves either the old state or the new one.
    Only the seq-mark write lives here (the one flash write while streaming); segments, the
    epoch and boot recovery are outbox_flash functions on this object."""

    def __init__(self, path):
        self.path = path

    def file(self, name, mode="r"):
        """The one door to the directory's files (tests put faults here)."""
        return open(self.path + "/" + name, mode)

    def put(self, name, text):
        """Replace file `name` with `text`, whole."""
        p = self.path + "/" + name
        with self.file(name + ".tmp", "w") as f:
            f.write(text)
        try:
            os.rename(p + ".tmp", p)
        except OSError:  # filesystems where rename does not replace (FAT)
            os.remove(p)
            os.rename(p + ".tmp", p)


def _boot(ob):
    """Boot recovery (outbox_boot), imported for this one call and dropped again; in a
    function of its own so that no stale frame slot keeps the module alive."""
    ob._flash()  # (outbox_boot uses it too; ob._unflash() drops it when the flash is empty)
    from fieldlink import outbox_boot
    try:
        outbox_boot.boot(ob)
    finally:
        sys.modules.pop("fieldlink.outbox_boot", None)
        pkg = sys.modules.get("fieldlink")
        if pkg is not None and hasattr(pkg, "outbox_boot"):
            delattr(pkg, "outbox_boot")


class Outbox:
    """Readings in seq order until acked. Sending: `on_connect()`, `pending_gaps()`,
    `next_batch()`, `ack()`. Sampling: `push(seq, text)` with seq == `next_seq`."""

    def __init__(self, ram_bytes, flash_bytes=0, store=None, seg_bytes=_SEG_BYTES,
                 seq_block=_SEQ_BLOCK, urandom=None):
        self.flash_limit = flash_bytes if store is not None else 0
        self.store = store
        self.seg_bytes = seg_bytes
        self.seq_block = seq_block
        self.next_seq = 1
        self.boot = 1
        self.dropped = 0     # cumulative since first boot
        self.acked = 0       # highest cumulative ack seen
        self.gaps = []       # [from, to, why, sent_on_this_connection]
        # RAM tail (newest): the readings are bytes in _buf; per reading its seq, offset and
        # length (with the "," after it) in three arrays used as one ring: RAM reading i
        # (0 = oldest) is at slot (_rh + i) % _cap, _rc of them. Allocated here once, like
        # the buffer, and never resized: push, ack and drop allocate nothing for the index.
        # For proto.reading's output the buffer is full before the index can be; a shorter
        # text may find the index full first, and push then makes room exactly as for a full
        # buffer (spill or drop the oldest).
        self._buf = bytearray(ram_bytes)
        self._mv = memoryview(self._buf)
        self._tail = 0       # where the next reading is written
        cap = ram_bytes // _MIN_N + 1  # + 1: one to spare (and one for a tiny buffer)
        w = 2 if ram_bytes < 65536 else 4  # offsets and lengths are < ram_bytes
        # seqs: 64 bits (the protocol allows them; a board sampling every 2 ms passes 2**32
        # after ~99 days, and MicroPython's "I" keeps the low 32 bits without a word)
        self._rq = array("Q", bytes(8 * cap))
        self._ro = array("H" if w == 2 else "I", bytes(w * cap))
        self._rn = array("H" if w == 2 else "I", bytes(w * cap))
        self._cap = cap
        self._rh = 0         # slot of the oldest RAM reading
        self._rc = 0         # RAM readings held
        self.ram_used = 0    # bytes of the readings held (holes left by drops not counted)
        # head: the readings of the oldest flash segments, loaded for sending: their seqs and
        # the byte offset of each one's line in its segment file (no texts: outbox_flash
        # reads a batch's readings from the file when it sends them)
        self._hq = []
        self._ho = []
        self._hsegs = []     # [last, name, nbytes] of loaded segments, oldest first
        # Segments on flash not loaded yet, the oldest first: the oldest few (at most
        # outbox_flash._WINDOW) listed here, flat: first seq, last seq, count, bytes (the file
        # name follows from the first three); the newer ones only counted, _sq segments of
        # _sn readings, all with first seq >= _sfrom, and listed from flash again when these
        # are used up. RAM is the same for any backlog: one list and name per segment (~140
        # B) kept a 600-segment backlog from booting even on a 256k heap.
        self._segs = array("Q")  # (seqs: 64 bits, see _rq)
        self._sq = 0
        self._sn = 0
        self._sfrom = 0
        self.flash_used = 0
        self._inflight = 0   # the first N readings of head+RAM are sent, not acked
        # Highest seq that may be stored on the server without being acked yet (sent on this
        # or an earlier connection). Readings <= this are never dropped: the server may hold
        # them, and a `gap dropped` over them would make the dropped count inexact.
        self._sent_hi = 0
        # No seq above this was ever sent: persisted in meta.json ("sent") before a batch
        # goes past it, a block ahead (flash wear: one write per seq_block readings sent), so
        # that after a power cut the outbox still knows which flash segments the server
        # cannot hold, and can drop the oldest of those first when full.
        self._sent_mark = 0
        self._dq = None      # unlisted segments to drop next (outbox_flash._drop_segment)
        self._mark = 0
        self.spills = 0      # flash segment writes, for tests and health
        self._meta_dirty = False
        self._fl = None      # the outbox_flash module while it is loaded
        # Without a store nothing survives a reboot: every boot is a new numbering, so a new
        # epoch (docs/protocol.md "Epochs": 64 random bits). With one, the stored epoch is
        # read (or this one stored with new state) by outbox_boot.boot.
        self.epoch = binascii.hexlify((urandom or os.urandom)(8)).decode()
        self.notice = None   # what the app should log (WARN) about the state found at boot
        if store is not None:
            _boot(self)
            self._unflash()

    # ---- the flash side, loaded while needed ----

    def _flash(self):
        f = self._fl
        if f is None:
            from fieldlink import outbox_flash as f
            self._fl = f
        return f

    def _unflash(self):
        """Drop outbox_flash once the flash holds no readings (it comes back when RAM
        spills). Not while the flash is in use: importing it allocates."""
        if self._fl is not None and not self._segs and not self._sq and not self._hsegs:
            self._fl = None
            sys.modules.pop("fieldlink.outbox_flash", None)
            pkg = sys.modules.get("fieldlink")
            if pkg is not None and hasattr(pkg, "outbox_flash"):
                delattr(pkg, "outbox_flash")

    def save_meta(self):
        if self.store is None:
            return
        try:
            self._merge_gaps(False)
            self.store.put("meta.json", json.dumps({
                "v": _META_V, "boot": self.boot, "mark": self._mark, "dropped": self.dropped,
                "acked": self.acked, "sent": self._sent_mark,
                "gaps": [g[:3] for g in self.gaps]}))
            self._meta_dirty = False
        except (MemoryError, OSError):
            # A fragmented heap or a full filesystem (ENOSPC) must not lose a reading, nor
            # raise into the sampler or boot (the board reset-looped on a full flash): the
            # state is saved at the next push, and nothing above the saved mark is sent
            # meanwhile (_meta_unsaved).
            self._meta_dirty = True

    def _merge_gaps(self, resend):
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

    def flush(self):
        """Before a clean reboot: everything to flash, mark = next seq (no reboot gap)."""
        if self.store is None:
            return
        self._inflight = 0
        self._flash().spill(self, False)
        self._mark = self.next_seq
        self.save_meta()

    def spill(self, full_only=True):
        """Write RAM readings to flash in chunks of seg_bytes. full_only: only whole chunks
        (called while the link is down long, so flash sees few, large writes). Segments it
        had to drop are persisted once, at the end. False if it could not."""
        if not self.flash_limit:
            return False
        if not self._rc or (full_only and self.ram_used < self.seg_bytes):
            return True  # nothing to write: no need to load the flash side
        return self._flash().spill(self, full_only)

    # ---- sampling side ----

    def push(self, seq, text):
        """Add one reading (JSON text or UTF-8 bytes from proto.reading with q == seq)."""
        if seq != self.next_seq:
            raise ValueError("outbox: seq %d, expected %d" % (seq, self.next_seq))
        data = text.encode() if isinstance(text, str) else text
        n = len(data) + 1
        mv = self._mv
        size = len(mv)  # outbox_ram_bytes
        if n > size:
            raise ValueError("outbox: reading of %d bytes > outbox_ram_bytes" % n)
        cap = self._cap
        # Room first (spill or drop the oldest), so the new reading always fits in the buffer
        # and in the index (full only if readings shorter than _MIN_N were pushed).
        # A MemoryError while spilling leaves everything as it was: the reading got no seq.
        while self.ram_used + n > size or self._rc >= cap:
            if not (self.flash_limit and self._flash().spill_chunk(self)):
                if not self._drop_ram():
                    break
        if self.ram_used + n > size or self._rc >= cap:
            # only readings the server may hold are left (at most `window` of them): this one
            # cannot be kept, and is declared like any other dropped reading
            self._add_gap(seq, seq, "dropped")
        else:
            ro = self._ro
            rn = self._rn
            h = self._rh
            c = self._rc
            t = self._tail
            if t + n > size:
                # Slide the held readings to the front of the buffer, in order, over the holes
                # of dropped/spilled ones (memmove within the buffer: no allocation).
                t = 0
                for i in range(c):
                    p = (h + i) % cap
                    o = ro[p]
                    k = rn[p]
                    if o != t:
                        mv[t:t + k] = mv[o:o + k]
                        ro[p] = t
                    t += k
                self._tail = t
            # The bytes first, then the index: a MemoryError (the slice's memoryview) leaves
            # the reading unstored and without a seq.
            mv[t:t + n - 1] = data
            mv[t + n - 1] = 44  # ","
            p = (h + c) % cap
            self._rq[p] = seq
            ro[p] = t
            rn[p] = n
            self._rc = c + 1
            self._tail = t + n
            self.ram_used += n
        self.next_seq = seq + 1
        if self.store is not None and (self.next_seq > self._mark or self._meta_dirty):
            self._mark = self.next_seq + self.seq_block
            self.save_meta()

    def _ram_forget(self, k):
        """Forget the first k RAM readings (the ring's head moves on)."""
        rn = self._rn
        cap = self._cap
        h = self._rh
        for i in range(k):
            self.ram_used -= rn[(h + i) % cap]
        self._rh = (h + k) % cap
        self._rc -= k
        if not self._rc:
            self._tail = 0

    def _drop_ram(self):
        """Drop the oldest RAM reading the server cannot hold yet (see _sent_hi)."""
        rq = self._rq
        ro = self._ro
        rn = self._rn
        cap = self._cap
        h = self._rh
        c = self._rc
        i = 0
        while i < c and rq[(h + i) % cap] <= self._sent_hi:
            i += 1
        if i >= c:
            return False
        p = (h + i) % cap
        q = rq[p]
        # Declared before it leaves the index (a new gap allocates): a MemoryError then
        # leaves it held, never gone without a gap.
        self._add_gap(q, q, "dropped")
        self.ram_used -= rn[p]
        # Close the hole in the index: the i readings before it (in flight, so at most
        # `window` of them) move up one slot, and the head with them.
        while i:
            s = (h + i - 1) % cap
            rq[p] = rq[s]
            ro[p] = ro[s]
            rn[p] = rn[s]
            p = s
            i -= 1
        self._rh = (h + 1) % cap
        self._rc = c - 1
        if c == 1:
            self._tail = 0
        return True

    def _add_gap(self, frm, to, why):
        gs = self.gaps
        g = gs[-1] if gs else None
        if g is not None and not g[3] and g[2] == why and g[1] + 1 == frm:
            g[1] = to
        else:
            gs.append([frm, to, why, False])  # (first: a MemoryError here counts nothing)
        if why == "dropped":
            self.dropped += to - frm + 1

    # ---- link side ----

    def on_connect(self):
        """A new connection: nothing is in flight, every pending gap must be sent again."""
        self._inflight = 0
        for g in self.gaps:
            g[3] = False
        self._merge_gaps(True)

    def pending_gaps(self):
        """Gaps not yet sent on this connection, as [(from, to, why)]; marks them sent. None
        while meta.json cannot be saved, like batches (_meta_unsaved): a gap over seqs above
        the saved seq mark would make the server drop the readings that get those seqs after
        a power cut."""
        out = []  # type: list[tuple[int, int, str]]
        if self._meta_unsaved():
            return out
        for g in self.gaps:
            if not g[3]:
                g[3] = True
                out.append((g[0], g[1], g[2]))
        return out

    def _meta_unsaved(self):
        """True while a meta write failed (MemoryError) and retrying it fails too. Nothing is
        sent then: readings above the last saved seq mark could get their seqs reused after
        a power cut, and the server would drop the new readings as duplicates."""
        if self._meta_dirty:
            self.save_meta()
        return self._meta_dirty

    def may_send(self, q):
        """Before a batch up to seq q goes out: the sent mark must cover it, written to flash
        first. False if that write failed: nothing goes (tried again next time)."""
        if q <= self._sent_mark or self.store is None:
            return True
        self._sent_mark = q + self.seq_block
        self.save_meta()
        return not self._meta_dirty

    def next_batch(self, max_n, window):
        """Up to max_n readings (JSON texts) not yet sent, keeping at most `window` in flight.
        The general path, through the head loaded from flash (so it lives in outbox_flash);
        the app sends with next_batch_text."""
        if self._meta_unsaved():
            return []
        return self._flash().next_batch(self, max_n, window)

    def next_batch_text(self, max_n, window):
        """Like next_batch, but the readings already joined with "," (the body of a batch
        message), or "" when there is nothing to send. From RAM this is one string cut from
        the buffer, where the readings lie back to back with their commas."""
        v = self.next_batch_view(max_n, window)
        if isinstance(v, list):
            return ",".join([str(t[:-1], "utf-8") for t in v])
        return str(v, "utf-8") if v else ""

    def next_batch_view(self, max_n, window):
        """next_batch_text without building a string: from RAM a memoryview of the buffer
        (the readings joined; valid until the outbox changes next: use it at once), while the
        flash holds readings a list of them as bytes, each ending in a separator byte to be
        replaced (outbox_flash.next_batch with raw), empty for nothing."""
        if self._meta_unsaved():
            return ""
        i = self._inflight
        hq = len(self._hq)
        if i < hq or self._segs or self._sq:
            return self._flash().next_batch(self, max_n, window, True)
        room = window - i
        if room > max_n:
            room = max_n
        j = i - hq
        c = self._rc
        if room <= 0 or j >= c:
            return ""
        ro = self._ro
        rn = self._rn
        cap = self._cap
        h = self._rh
        p = (h + j) % cap
        o = ro[p]
        e = o + rn[p]
        k = j + 1
        while k < c and k - j < room:
            p = (h + k) % cap
            if ro[p] != e:  # not contiguous: a hole in between
                break
            e += rn[p]
            k += 1
        q = self._rq[(h + k - 1) % cap]
        if not self.may_send(q):
            return ""
        v = self._mv[o:e - 1]  # (allocates: before the bookkeeping moves on)
        self._inflight = i + k - j
        if q > self._sent_hi:
            self._sent_hi = q
        return v

    def welcome(self, n):
        """The server's ack in `welcome`: it holds nothing above n (it stores in order)."""
        self.ack(n)
        self._sent_hi = self.acked

    def ack(self, n):
        """Cumulative ack: every seq <= n is stored (or declared) on the server."""
        if n > self.acked:
            self.acked = n
        gs = self.gaps
        k = 0
        while k < len(gs):
            if gs[k][1] <= n:
                gs.pop(k)
            else:
                k += 1
        hq = self._hq
        k = 0
        while k < len(hq) and hq[k] <= n:
            k += 1
        if k:
            # In step, by pops: they only shrink the lists, where `del x[:k]` would build a
            # slice object (an allocation: a MemoryError between two deletes would leave
            # seqs and offsets out of step).
            ho = self._ho
            i = 0
            while i < k:
                hq.pop(0)
                ho.pop(0)
                i += 1
            # at once: what follows may fail (flash), and must not leave _inflight past them
            self._inflight = self._inflight - k if self._inflight > k else 0
        removed = 0
        if self._fl is not None:  # (always loaded while the flash holds readings)
            self._fl.forget_acked(self, n)
            self._unflash()
        if not hq:
            rq = self._rq
            cap = self._cap
            h = self._rh
            c = self._rc
            k = 0
            while k < c and rq[(h + k) % cap] <= n:
                k += 1
            if k:
                self._ram_forget(k)
            removed += k
        self._inflight = self._inflight - removed if self._inflight > removed else 0
        if n >= self.next_seq:
            # The server knows seqs this device no longer remembers (flash wiped): continue
            # above them, or new readings would be ignored as duplicates.
            self.next_seq = n + 1
            if self.store is not None:
                self._mark = self.next_seq + self.seq_block
                self.save_meta()

    # ---- numbers for hello/health ----

    def held(self):
        n = len(self._hq) + self._rc + self._sn
        segs = self._segs
        for j in range(2, len(segs), 4):
            n += segs[j]
        return n

    def first(self):
        if not self._hq and not self._segs and self._sq:
            self._flash().refill(self)  # (the listed segments are used up)
        if self._hq:
            q = self._hq[0]
        elif self._segs:
            q = self._segs[0]
        elif self._rc:
            q = self._rq[self._rh]
        else:
            return self.next_seq
        return q if q > self.acked else self.acked + 1
