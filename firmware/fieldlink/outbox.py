"""The outbox: every reading is kept until the server acknowledges it (docs/protocol.md).

Bounded in bytes. New readings go to RAM: one bytearray of `ram_bytes`, allocated once, the
readings in it back to back as `text,` (so a run of them is already the body of a batch), a
sliding buffer compacted in place when its end is reached. No per-reading string stays on the
heap, so the heap does not fragment under load. When RAM is full or the link is down long, the
oldest RAM readings are spilled to flash in batched segment writes (a few KB each: flash wears
out). Flash segments are always older than RAM, so the queue is: loaded head, flash segments,
RAM. When everything is full the oldest readings are dropped, counted, and declared with a
`gap dropped`. The seq high-water mark is persisted in blocks; after a power cut the seqs that
may have died with RAM are declared with a `gap reboot`. The epoch (docs/protocol.md "Epochs")
names this numbering: made when the flash holds no state, written once to its own file.

`Outbox` is bookkeeping only; all flash I/O goes through the small `DirStore` shell (or any
object with the same methods), so tests can drive it on CPython and MicroPython alike.
"""
import binascii
import json

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):  # type: ignore[misc]  # the stubs' const is generic
        return x

try:
    import os
except ImportError:  # pragma: no cover
    import uos as os

SEQ_BLOCK = const(256)   # persist the seq mark once per this many readings
SEG_BYTES = const(2048)  # target size of one flash write
_META = "meta.json"
_EPOCH = "epoch"
_META_V = const(2)        # meta v2: an epoch file was written with this state (v1: before epochs)


def new_epoch(urandom=None):
    """A fresh epoch: 16 hex chars from 64 random bits (docs/protocol.md "Epochs")."""
    return binascii.hexlify((urandom or os.urandom)(8)).decode()


def valid_epoch(e):
    """1-16 chars of [0-9a-f] (the protocol's limits)."""
    if not isinstance(e, str) or not 1 <= len(e) <= 16:
        return False
    for c in e:
        if c not in "0123456789abcdef":
            return False
    return True


def _seq_of(text):
    # readings are built by proto.reading(): '{"q":<seq>,...'
    return int(text[5:text.index(",")])


class DirStore:
    """Flash shell: a directory of append-only segment files plus meta.json.

    Every file is written whole to a temporary name and renamed into place, so a power cut
    mid-write leaves either the old state or the new one, never half a segment.
    """

    def __init__(self, path):
        self.path = path
        try:
            os.mkdir(path)
        except OSError:
            pass  # exists
        names = os.listdir(path)
        for n in names:
            if n.endswith(".tmp"):
                if n == _META + ".tmp" and _META not in names and self._recover_meta(n):
                    continue
                os.remove(self._p(n))

    def _recover_meta(self, tmp):
        """A power cut between _put's remove and rename (FAT) leaves only meta.json.tmp,
        written whole: keep it, or the numbering would restart below seqs already used.
        A tmp cut mid-write does not parse and is dropped."""
        try:
            with open(self._p(tmp)) as f:
                json.loads(f.read())
            os.rename(self._p(tmp), self._p(_META))
            return True
        except (OSError, ValueError):
            return False

    def _p(self, name):
        return self.path + "/" + name

    def _put(self, name, text):
        tmp = self._p(name + ".tmp")
        with open(tmp, "w") as f:
            f.write(text)
        try:
            os.rename(tmp, self._p(name))
        except OSError:  # filesystems where rename does not replace (FAT)
            os.remove(self._p(name))
            os.rename(tmp, self._p(name))

    def segments(self):
        """[(first, last, count, nbytes, name)] oldest first."""
        out = []
        for n in os.listdir(self.path):
            if n.startswith("s") and not n.endswith(".tmp"):
                try:
                    a, b, c = n[1:].split("_")
                    out.append((int(a), int(b), int(c), os.stat(self._p(n))[6], n))
                except (ValueError, OSError):
                    pass
        out.sort()
        return out

    def write_segment(self, first, last, lines):
        name = "s%010d_%010d_%d" % (first, last, len(lines))
        tmp = self._p(name + ".tmp")
        try:
            with open(tmp, "w") as f:
                for ln in lines:  # line by line: no segment-sized string on the heap
                    f.write(ln)
                    f.write("\n")
            os.rename(tmp, self._p(name))
        except OSError:
            self.remove(name + ".tmp")  # (a full filesystem: give the space back)
            raise
        return name

    def read_segment(self, name):
        out = []
        with open(self._p(name)) as f:
            for ln in f:  # line by line: no segment-sized string on a fragmented heap
                ln = ln.rstrip("\n")
                if ln:
                    out.append(ln)
        return out

    def remove(self, name):
        try:
            os.remove(self._p(name))
        except OSError:
            pass

    def load_meta(self):
        try:
            with open(self._p(_META)) as f:
                return json.loads(f.read())
        except (OSError, ValueError):
            return None

    def save_meta(self, meta):
        self._put(_META, json.dumps(meta))

    def load_epoch(self):
        """The epoch text; None if there is no epoch file; "" if it is there but unreadable
        or not an epoch (corrupt)."""
        try:
            with open(self._p(_EPOCH)) as f:
                e = f.read().strip()
        except OSError:
            return None
        except (ValueError, UnicodeError):
            return ""
        return e if valid_epoch(e) else ""

    def save_epoch(self, epoch):
        self._put(_EPOCH, epoch)

    def wipe(self):
        """Forget the numbering's state: segments, then meta (a power cut in between still
        finds meta v2 without an epoch, and the next boot finishes the job). The caller then
        writes the new epoch file."""
        for n in os.listdir(self.path):
            if n != _EPOCH and n != _META:
                os.remove(self._p(n))
        self.remove(_META)


class Outbox:
    """Readings in seq order until acked. Sending: `on_connect()`, `pending_gaps()`,
    `next_batch()`, `ack()`. Sampling: `push(seq, text)` with seq == `next_seq`."""

    def __init__(self, ram_bytes, flash_bytes=0, store=None, seg_bytes=SEG_BYTES,
                 seq_block=SEQ_BLOCK, urandom=None):
        self.ram_limit = ram_bytes
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
        # length (with the "," after it) in parallel lists (small ints cost no heap)
        self._buf = bytearray(ram_bytes)
        self._mv = memoryview(self._buf)
        self._tail = 0       # where the next reading is written
        self._rq = []
        self._ro = []
        self._rn = []
        self.ram_used = 0    # bytes of the readings held (holes left by drops not counted)
        # head: readings loaded from the oldest flash segments for sending
        self._hq = []
        self._hd = []
        self._hsegs = []     # [last, name, nbytes] of loaded segments, oldest first
        self._segs = []      # [first, last, count, nbytes, name] on flash, not loaded
        self.flash_used = 0
        self._inflight = 0   # the first N readings of head+RAM are sent, not acked
        # Highest seq that may be stored on the server without being acked yet (sent on this
        # or an earlier connection). Readings <= this are never dropped: the server may hold
        # them, and a `gap dropped` over them would make the dropped count inexact.
        self._sent_hi = 0
        self._mark = 0
        self.spills = 0      # flash segment writes, for tests and health
        self._meta_dirty = False
        # Without a store nothing survives a reboot: every boot is a new numbering, so a new
        # epoch. With one, _open reads it (or makes it with new state).
        self.epoch = new_epoch(urandom)
        self.notice = None   # what the app should log (WARN) about the state found at boot
        if store is not None:
            self._open_epoch()
            self._open()

    # ---- persistence ----

    def _open_epoch(self):
        """Keep the stored epoch, or store self.epoch (a fresh one) when there is none:
        - no state at all (first boot, wiped flash): a new numbering;
        - state from firmware before epochs (meta v1, or segments without meta): it keeps its
          numbering, the server adopts the epoch unchanged;
        - an epoch-era state (meta v2) whose epoch file is gone, or a corrupt epoch file: the
          state's numbering cannot be named any more, so it is discarded (its segments belong
          to an unknown epoch; declaring them would be declaring someone else's seqs)."""
        st = self.store
        e = st.load_epoch()
        if e:
            self.epoch = e
            return
        meta = st.load_meta()
        if e == "" or (meta is not None and meta.get("v", 1) >= _META_V):
            n = len(st.segments())
            st.wipe()
            self.notice = "epoch file %s: new epoch %s, %d flash segments discarded" % (
                "corrupt" if e == "" else "lost", self.epoch, n)
        st.save_epoch(self.epoch)

    def _open(self):
        meta = self.store.load_meta()
        segs = self.store.segments()
        last_flash = 0
        for s in segs:
            self._segs.append(list(s))
            self.flash_used += s[3]
            if s[1] > last_flash:
                last_flash = s[1]
        if meta is None:
            if segs:  # meta lost but data present: continue above it
                self.next_seq = last_flash + 1
        else:
            self.boot = meta.get("boot", 0) + 1
            self.dropped = meta.get("dropped", 0)
            self.acked = meta.get("acked", 0)
            for g in meta.get("gaps", ()):
                self.gaps.append([g[0], g[1], g[2], False])
            self.next_seq = max(meta.get("mark", 1), last_flash + 1)
            self._declare_holes()
            # Everything between what is safe (on flash, acked or already declared) and the
            # mark may have been produced and lost with RAM: an upper bound, per the protocol.
            lo = max(last_flash, self.acked)
            for g in self.gaps:
                lo = max(lo, g[1])
            if lo + 1 <= self.next_seq - 1:
                self.gaps.append([lo + 1, self.next_seq - 1, "reboot", False])
        if self.acked:
            self._forget_acked_segments(self.acked)
        self._mark = self.next_seq + self.seq_block
        self._sent_hi = self.next_seq - 1  # unknown what was sent before the reboot
        self.save_meta()

    def _declare_holes(self):
        """Seqs above the ack that lie between flash segments (or below the first) and in no
        declared gap: segments dropped after meta was last saved (drops are persisted with the
        seq mark, not per dropped segment: flash wear). Declared as `reboot` (may have been
        produced and lost), or the server's ack could never pass them."""
        cur = self.acked
        for s in self._segs:  # oldest first
            if s[0] > cur + 1:
                self._gap_uncovered(cur + 1, s[0] - 1)
            if s[1] > cur:
                cur = s[1]

    def _gap_uncovered(self, a, b):
        for g in sorted(self.gaps):
            if g[1] < a or g[0] > b:
                continue
            if g[0] > a:
                self.gaps.append([a, g[0] - 1, "reboot", False])
            a = max(a, g[1] + 1)
        if a <= b:
            self.gaps.append([a, b, "reboot", False])
        self.gaps.sort()

    def save_meta(self):
        if self.store is None:
            return
        try:
            self._save_meta()
            self._meta_dirty = False
        except MemoryError:
            # a fragmented heap must not lose a reading: the state is saved at the next push
            self._meta_dirty = True

    def _save_meta(self):
        self._merge_gaps(False)
        self.store.save_meta({"v": _META_V, "boot": self.boot, "mark": self._mark,
                              "dropped": self.dropped, "acked": self.acked,
                              "gaps": [g[:3] for g in self.gaps]})

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
        self.spill(False)
        self._mark = self.next_seq
        self.save_meta()

    # ---- sampling side ----

    def push(self, seq, text):
        """Add one reading (JSON text or UTF-8 bytes from proto.reading with q == seq)."""
        if seq != self.next_seq:
            raise ValueError("outbox: seq %d, expected %d" % (seq, self.next_seq))
        data = text.encode() if isinstance(text, str) else text
        n = len(data) + 1
        if n > self.ram_limit:
            raise ValueError("outbox: reading of %d bytes > outbox_ram_bytes" % n)
        # Room first (spill or drop the oldest), so the new reading always fits in the buffer.
        # A MemoryError while spilling leaves everything as it was: the reading got no seq.
        while self.ram_used + n > self.ram_limit:
            if not (self.flash_limit and self._spill_chunk()):
                if not self._drop_ram():
                    break
        self.next_seq = seq + 1
        if self.ram_used + n > self.ram_limit:
            # only readings the server may hold are left (at most `window` of them): this one
            # cannot be kept, and is declared like any other dropped reading
            self._add_gap(seq, seq, "dropped")
        else:
            self._append(seq, data, n)
        if self.store is not None and (self.next_seq > self._mark or self._meta_dirty):
            self._mark = self.next_seq + self.seq_block
            self.save_meta()

    def _append(self, seq, data, n):
        t = self._tail
        if t + n > len(self._buf):
            self._compact()
            t = self._tail
        # The three lists change together or not at all (a MemoryError while one grows).
        rq = self._rq
        rq.append(seq)
        try:
            self._ro.append(t)
            try:
                self._rn.append(n)
            except MemoryError:
                self._ro.pop()
                raise
        except MemoryError:
            rq.pop()
            self.next_seq = seq
            raise
        mv = self._mv
        mv[t:t + n - 1] = data
        mv[t + n - 1] = 44  # ","
        self._tail = t + n
        self.ram_used += n

    def _compact(self):
        """Slide the held readings to the front of the buffer, in order, over the holes of
        dropped/spilled ones (memmove within the buffer: no allocation)."""
        mv = self._mv
        ro = self._ro
        rn = self._rn
        w = 0
        for i in range(len(ro)):
            o = ro[i]
            n = rn[i]
            if o != w:
                mv[w:w + n] = mv[o:o + n]
                ro[i] = w
            w += n
        self._tail = w

    def _text(self, i):
        """RAM reading i as str (a new object: only for the batch being sent or spilled)."""
        o = self._ro[i]
        return str(self._mv[o:o + self._rn[i] - 1], "utf-8")

    def _ram_forget(self, k):
        """Forget the first k RAM readings."""
        rn = self._rn
        for i in range(k):
            self.ram_used -= rn[i]
        del self._rq[:k]
        del self._ro[:k]
        del rn[:k]
        if not self._rq:
            self._tail = 0

    def _drop_ram(self):
        """Drop the oldest RAM reading the server cannot hold yet (see _sent_hi)."""
        i = 0
        while i < len(self._rq) and self._rq[i] <= self._sent_hi:
            i += 1
        if i >= len(self._rq):
            return False
        q = self._rq.pop(i)
        self._ro.pop(i)
        self.ram_used -= self._rn.pop(i)
        if not self._rq:
            self._tail = 0
        self._add_gap(q, q, "dropped")
        return True

    def _add_gap(self, frm, to, why):
        if why == "dropped":
            self.dropped += to - frm + 1
        if self.gaps:
            g = self.gaps[-1]
            if not g[3] and g[2] == why and g[1] + 1 == frm:
                g[1] = to
                return
        self.gaps.append([frm, to, why, False])

    # ---- spilling ----

    def spill(self, full_only=True):
        """Write RAM readings to flash in chunks of seg_bytes. full_only: only whole chunks
        (called while the link is down long, so flash sees few, large writes). Segments it
        had to drop are persisted once, at the end."""
        d = self.dropped
        ok = True
        while self._rq and (not full_only or self.ram_used >= self.seg_bytes):
            if not self._spill_chunk():
                ok = False
                break
        if self.dropped != d:
            self.save_meta()
        return ok

    def _spill_chunk(self):
        n = 0
        size = 0
        rn = self._rn
        while n < len(rn) and (n == 0 or size + rn[n] <= self.seg_bytes):
            size += rn[n]
            n += 1
        if n == 0 or size > self.flash_limit:
            return False
        while self.flash_used + size > self.flash_limit:
            if not self._drop_segment():
                return False  # flash holds only what the server may have: keep it
        qs = self._rq[:n]
        lines = [self._text(i) for i in range(n)]
        try:
            name = self.store.write_segment(qs[0], qs[-1], lines)
        except OSError:
            # flash full or failing: keep the readings in RAM; the caller drops the oldest
            # (counted) instead of raising into the sampler
            return False
        self.spills += 1
        nbytes = size
        self.flash_used += nbytes
        self._ram_forget(n)
        if self._inflight > len(self._hq):
            # part of the chunk is in flight: it must stay at the front of the queue, so it
            # becomes a loaded head segment (no unloaded segment can exist here)
            self._hq.extend(qs)
            self._hd.extend(lines)
            self._hsegs.append([qs[-1], name, nbytes])
        else:
            self._segs.append([qs[0], qs[-1], n, nbytes, name])
        return True

    def _drop_segment(self):
        """Drop the oldest flash segment the server cannot hold yet; False if none."""
        j = 0
        while j < len(self._segs) and self._segs[j][0] <= self._sent_hi:
            j += 1
        if j >= len(self._segs):
            return False
        s = self._segs.pop(j)
        if s[2] == s[1] - s[0] + 1:
            self._add_gap(s[0], s[1], "dropped")
        else:
            # the segment has holes (readings dropped from RAM earlier, already declared):
            # declare exactly the seqs it holds so the dropped count stays exact
            try:
                qs = [_seq_of(t) for t in self.store.read_segment(s[4])]
            except (OSError, ValueError):
                qs = []
            for q in qs:
                self._add_gap(q, q, "dropped")
        self.store.remove(s[4])
        self.flash_used -= s[3]
        # No meta write here: the drop is persisted with the next seq mark (or at the end of
        # spill()); a power cut before that is caught at boot by _declare_holes.
        return True

    def _load_segment(self):
        s = self._segs[0]
        try:
            lines = self.store.read_segment(s[4])  # a MemoryError here changes nothing
            qs = [_seq_of(t) for t in lines]
        except (OSError, ValueError):
            self._segs.pop(0)
            # unreadable: these seqs can never be sent, so declare them rather than leave a
            # hole that would stop the server's cumulative ack for good
            self.store.remove(s[4])
            self.flash_used -= s[3]
            self._add_gap(max(s[0], self.acked + 1), s[1], "reboot")
            return
        keep_q = []
        keep_d = []
        for i in range(len(qs)):
            if qs[i] > self.acked:
                keep_q.append(qs[i])
                keep_d.append(lines[i])
        self._hsegs.append([s[1], s[4], s[3]])
        self._segs.pop(0)
        self._hq.extend(keep_q)
        self._hd.extend(keep_d)

    # ---- link side ----

    def on_connect(self):
        """A new connection: nothing is in flight, every pending gap must be sent again."""
        self._inflight = 0
        for g in self.gaps:
            g[3] = False
        self._merge_gaps(True)

    def pending_gaps(self):
        """Gaps not yet sent on this connection, as [(from, to, why)]; marks them sent."""
        out = []
        for g in self.gaps:
            if not g[3]:
                g[3] = True
                out.append((g[0], g[1], g[2]))
        return out

    def in_flight(self):
        return self._inflight

    def _meta_unsaved(self):
        """True while a meta write failed (MemoryError) and retrying it fails too. Nothing is
        sent then: readings above the last saved seq mark could get their seqs reused after
        a power cut, and the server would drop the new readings as duplicates."""
        if self._meta_dirty:
            self.save_meta()
        return self._meta_dirty

    def next_batch(self, max_n, window):
        """Up to max_n readings (JSON texts) not yet sent, keeping at most `window` in flight."""
        if self._meta_unsaved():
            return []
        room = window - self._inflight
        if room > max_n:
            room = max_n
        out = []  # type: list[str]
        i = self._inflight
        while len(out) < room:
            if i < len(self._hq):
                out.append(self._hd[i])
                i += 1
            elif self._segs:
                self._load_segment()
            elif i - len(self._hq) < len(self._rq):
                out.append(self._text(i - len(self._hq)))
                i += 1
            else:
                break
        self._inflight = i
        if out:
            j = i - 1
            q = self._hq[j] if j < len(self._hq) else self._rq[j - len(self._hq)]
            if q > self._sent_hi:
                self._sent_hi = q
        return out

    def next_batch_text(self, max_n, window):
        """Like next_batch, but the readings already joined with "," (the body of a batch
        message), or "" when there is nothing to send. From RAM this is one string cut from
        the buffer, where the readings lie back to back with their commas."""
        if self._meta_unsaved():
            return ""
        i = self._inflight
        hq = len(self._hq)
        if i < hq or self._segs:
            return ",".join(self.next_batch(max_n, window))
        room = window - i
        if room > max_n:
            room = max_n
        j = i - hq
        ro = self._ro
        rn = self._rn
        end = len(ro)
        if room <= 0 or j >= end:
            return ""
        o = ro[j]
        e = o + rn[j]
        k = j + 1
        while k < end and k - j < room and ro[k] == e:  # contiguous: no hole in between
            e += rn[k]
            k += 1
        self._inflight = i + k - j
        q = self._rq[k - 1]
        if q > self._sent_hi:
            self._sent_hi = q
        return str(self._mv[o:e - 1], "utf-8")

    def welcome(self, n):
        """The server's ack in `welcome`: it holds nothing above n (it stores in order)."""
        self.ack(n)
        self._sent_hi = self.acked

    def ack(self, n):
        """Cumulative ack: every seq <= n is stored (or declared) on the server."""
        if n > self.acked:
            self.acked = n
        k = 0
        while self.gaps and k < len(self.gaps):
            if self.gaps[k][1] <= n:
                self.gaps.pop(k)
            else:
                k += 1
        k = 0
        while k < len(self._hq) and self._hq[k] <= n:
            k += 1
        if k:
            del self._hq[:k]
            del self._hd[:k]
        removed = k
        while self._hsegs and self._hsegs[0][0] <= n:
            h = self._hsegs.pop(0)
            self.store.remove(h[1])
            self.flash_used -= h[2]
        self._forget_acked_segments(n)
        if not self._hq:
            k = 0
            while k < len(self._rq) and self._rq[k] <= n:
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

    def _forget_acked_segments(self, n):
        while self._segs and self._segs[0][1] <= n and not self._hq:
            s = self._segs.pop(0)
            self.store.remove(s[4])
            self.flash_used -= s[3]

    # ---- numbers for hello/health ----

    def held(self):
        n = len(self._hq) + len(self._rq)
        for s in self._segs:
            n += s[2]
        return n

    def first(self):
        if self._hq:
            q = self._hq[0]
        elif self._segs:
            q = self._segs[0][0]
        elif self._rq:
            q = self._rq[0]
        else:
            return self.next_seq
        return q if q > self.acked else self.acked + 1

    def bytes_used(self):
        return self.ram_used + self.flash_used
