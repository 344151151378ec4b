"""The outbox: every reading is kept until the server acknowledges it (docs/protocol.md).

Bounded in bytes. New readings go to RAM (`ring.Ring`: one buffer allocated once, no
per-reading object, nothing that grows with the backlog). When RAM is full or the link is
down long, the oldest are spilled to flash in segment writes of a few KB (`flash.Segments`:
flash wears out); flash is always older than RAM, so the queue is: loaded head, flash
segments, RAM. When everything is full the oldest readings are dropped, counted, and
declared with a `gap dropped`. The numbering, the acks, the marks and the gaps are the
`ledger.Ledger`'s (the Outbox's base class); the seq mark is persisted in blocks, and after a power cut the seqs that
may have died with RAM are declared with a `gap reboot` (`boot.Recovery`). The epoch
(docs/protocol.md "Epochs") names this numbering: made when the flash holds no state.

`Outbox` is the façade the app and the link use. Its flash side is loaded only while the
flash holds readings (or to spill) and boot recovery only at boot (fieldlink.lazy): a board
streaming with nothing spilled keeps neither on its heap. Every file operation goes through
one `DirStore` (the one seam tests fake).
"""
import binascii
import json
import os

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):  # type: ignore[misc]  # the stubs' const is generic
        return x

from fieldlink import lazy
from fieldlink.outbox.core import Ledger, Ring

_SEQ_BLOCK = const(256)   # persist the seq mark once per this many readings
_SEG_BYTES = const(2048)  # target size of one flash write
# (the lazily loaded modules' names are literals where used: a global each would be resident)


class DirStore:
    """The outbox's one door to the flash: every file operation on its directory goes
    through it (tests fake this class, with faults, and nothing else). put() writes a file
    whole to a temporary name and renames it into place, so a power cut mid-write leaves
    either the old state or the new one."""

    def __init__(self, path):
        self.path = path
        try:
            os.mkdir(path)
        except OSError:
            pass  # exists

    def file(self, name, mode="r"):
        return open(self.path + "/" + name, mode)

    def put(self, name, text):
        """Replace file `name` with `text`, whole."""
        with self.file(name + ".tmp", "w") as f:
            f.write(text)
        try:
            self.rename(name + ".tmp", name)
        except OSError:  # filesystems where rename does not replace (FAT)
            self.remove(name)
            self.rename(name + ".tmp", name)

    def rename(self, old, new):
        os.rename(self.path + "/" + old, self.path + "/" + new)

    def remove(self, name):
        """Remove file `name`; False if it could not be removed."""
        try:
            os.remove(self.path + "/" + name)
            return True
        except OSError:
            return False

    def size(self, name):
        return os.stat(self.path + "/" + name)[6]

    def entries(self):
        """(name, bytes or None) of each file, one at a time where the port can (a list of
        every name of a big backlog would be tens of KB of heap); None where the port's
        listing has no sizes (size() then, for the names that matter)."""
        ild = getattr(os, "ilistdir", None)  # (CPython has none)
        if ild is None:
            for n in os.listdir(self.path):
                yield n, None
        else:
            for e in ild(self.path):
                yield e[0], (e[3] if len(e) > 3 else None)  # (littlefs and FAT give sizes)


def _recover(store, segs, epoch):
    """Boot recovery, loaded for this one call and dropped again; in a function of its own
    so that no stale frame slot keeps the module alive. (ledger state, epoch, notice, kept)."""
    r = lazy.load("fieldlink.outbox.boot").Recovery(store, segs)
    try:
        r.run(epoch)
        return r.state, r.epoch, r.notice, r.kept
    finally:
        r = None
        lazy.drop("fieldlink.outbox.boot")


class Outbox(Ledger):
    """Readings in seq order until acked. Sending: `on_connect()`, `welcome(ack)`,
    `pending_gaps()`, `next_batch_view()` (or `next_batch()`), `ack()`. Sampling:
    `push(seq, text)` with seq == `next_seq`.

    The Outbox is its ledger (the numbering: `next_seq`, `boot`, `dropped`, ... and the
    Ledger's methods; one object and a delegating method less each): the ledger's fields
    are changed only by the Ledger's methods, which the Outbox calls. `ring` is its RAM;
    the flash side is loaded while needed."""

    def __init__(self, ram_bytes, flash_bytes=0, store=None, seg_bytes=_SEG_BYTES,
                 seq_block=_SEQ_BLOCK, urandom=None):
        self.flash_limit = flash_bytes if store is not None else 0
        self.store = store
        self.seg_bytes = seg_bytes
        self.seq_block = seq_block
        self.ring = Ring(ram_bytes)
        self._fl = None      # the flash.Segments while the flash holds readings
        self._fl_used = 0    # their bytes on flash while none is loaded
        self.spills = 0      # flash segment writes, for tests and health
        # Without a store nothing survives a reboot: every boot is a new numbering, so a
        # new epoch (64 random bits). With one, the stored epoch is kept (or this one
        # stored with new state) by boot recovery.
        self.epoch = binascii.hexlify((urandom or os.urandom)(8)).decode()
        self.notice = None   # what the app should log (WARN) about the state found at boot
        st = (1, 0, 0, [], 1, None)  # type: tuple  # a new numbering
        kept = False
        if store is not None:
            st, self.epoch, self.notice, kept = _recover(store, self._flash(), self.epoch)
        Ledger.__init__(self, st[0], st[1], st[2], st[3], st[4], st[5], seq_block)
        if store is not None:
            if kept:
                self.save_meta()
            else:
                self.store = None
                self.flash_limit = 0
            self._unflash(self._fl)

    # ---- the flash side, loaded while needed ----

    def _flash(self):
        f = self._fl
        if f is None:
            f = self._fl = lazy.load("fieldlink.outbox.flash").Segments(
                self.store, self.flash_limit, self.seg_bytes, self._fl_used)
        return f

    def _unflash(self, f):
        """Drop the flash side (f) once the flash holds no readings (it comes back when RAM
        spills). Not while the flash is in use: importing it allocates."""
        if f.empty():
            self._fl_used = f.used
            self._fl = f = None
            lazy.drop("fieldlink.outbox.flash")

    def save_meta(self):
        if self.store is None:
            return
        try:
            self.store.put("meta.json", json.dumps(self.meta()))
            self.saved(True)
        except (MemoryError, OSError):
            # A fragmented heap or a full filesystem (ENOSPC) must not lose a reading, nor
            # raise into the sampler or boot: the state is saved at the next push, and
            # nothing above the saved mark is sent meanwhile (_unsaved).
            self.saved(False)

    def flush(self):
        """Before a clean reboot: everything to flash, mark = next seq (no reboot gap)."""
        if self.store is None:
            return
        self.land(self.inflight)  # (the connection is gone)
        self.spill(False)
        self.set_mark(self.next_seq)
        self.save_meta()

    def spill(self, full_only=True):
        """Write RAM readings to flash in chunks of seg_bytes. full_only: only whole chunks
        (called while the link is down long, so flash sees few, large writes). Segments it
        had to drop are persisted once, at the end. False if it could not."""
        if not self.flash_limit:
            return False
        ring = self.ring
        if not ring.n or (full_only and ring.used < self.seg_bytes):
            return True  # nothing to write: no need to load the flash side
        fl = self._flash()
        d = self.dropped
        ok = True
        while ring.n and (not full_only or ring.used >= self.seg_bytes):
            if not fl.spill_chunk(ring, self):
                ok = False
                break
            self.spills += 1
        if self.dropped != d:
            self.save_meta()
        return ok

    # ---- sampling side ----

    def push(self, seq, text):
        """Add one reading (JSON text or UTF-8 bytes from proto.reading with q == seq)."""
        if seq != self.next_seq:
            raise ValueError("outbox: seq %d, expected %d" % (seq, self.next_seq))
        data = text.encode() if isinstance(text, str) else text
        n = len(data) + 1
        ring = self.ring
        if n > ring.nbytes:
            raise ValueError("outbox: reading of %d bytes > outbox_ram_bytes" % n)
        # Room first (spill, or drop the oldest RAM reading the server cannot hold yet:
        # sent_hi). A MemoryError while spilling leaves everything as it was: the
        # reading got no seq.
        while not ring.add(seq, data):
            if self.flash_limit and self._flash().spill_chunk(ring, self):
                self.spills += 1
                continue
            i = ring.count_to(self.sent_hi)
            if i >= ring.n:
                # only readings the server may hold are left (at most `window` of them):
                # this one cannot be kept, and is declared like any other dropped reading
                self.add_gap(seq, seq, "dropped")
                break
            q = ring.seq(i)
            # Declared before it leaves the ring (a new gap allocates): a MemoryError then
            # leaves it held, never gone without a gap.
            self.add_gap(q, q, "dropped")
            ring.remove(i)
        if self.take(seq) and self.store is not None:
            self.set_mark(self.next_seq + self.seq_block)
            self.save_meta()

    # ---- link side ----

    def pending_gaps(self):
        """Gaps not yet sent on this connection, as [(from, to, why)]; marks them sent.
        Empty while meta.json cannot be saved, like batches (_unsaved): a gap over
        seqs above the saved seq mark would make the server drop the readings that get
        those seqs after a power cut."""
        if self._unsaved(0):
            return []
        return self.take_gaps()

    def _unsaved(self, q):
        """True while meta.json cannot be saved: nothing is sent then (readings above the
        last saved seq mark could get their seqs reused after a power cut, and the server
        would drop the new readings as duplicates). With q, a batch up to seq q is about to
        go: the sent mark must cover it, written to flash first."""
        if self.dirty or (q and self.store is not None and self.sent_due(q, self.seq_block)):
            self.save_meta()
        return self.dirty

    def next_batch(self, max_n, window, raw=False):
        """Up to max_n readings (JSON texts) not yet sent, keeping at most `window` in
        flight (with `raw` as flash.Segments.next_batch hands them out). The general path,
        through the flash side; the app sends with next_batch_view."""
        if self._unsaved(0):
            return []
        out, q, i = self._flash().next_batch(self.ring, self, max_n, window, raw)
        if out:
            if self._unsaved(q):
                return []
            self.sending(q, i)
        return out

    def next_batch_view(self, max_n, window):
        """What the sender copies into a batch message, without building a string: from RAM
        a memoryview of the buffer (the readings joined with ","; valid until the outbox
        changes next: use it at once), while the flash holds readings a list of them as
        bytes, each ending in a separator byte to be replaced; empty for nothing."""
        if self._unsaved(0):
            return ""
        i = self.inflight
        fl = self._fl
        if fl is not None and fl.unsent(i):
            return self.next_batch(max_n, window, True)
        room = window - i
        if room > max_n:
            room = max_n
        j = i - (fl.head() if fl is not None else 0)
        ring = self.ring
        if room <= 0 or j >= ring.n:
            return ""
        k = j + room  # (the end of the run: at most `room` readings, the ring's last)
        if k > ring.n:
            k = ring.n
        q = ring.seq(k - 1)
        if self._unsaved(q):
            return ""
        v = ring.view(j, k)  # (allocates: before the bookkeeping moves on)
        self.sending(q, i + k - j)
        return v

    def welcome(self, n):
        """The server's ack in `welcome`: it holds nothing above n (it stores in order)."""
        self.ack(n, True)

    def ack(self, n, welcome=False):
        """Cumulative ack: every seq <= n is stored (or declared) on the server."""
        jumped = Ledger.ack(self, n, welcome)
        fl = self._fl
        head = 0
        if fl is not None:  # (always loaded while the flash holds readings)
            fl.ack(self, n)
            head = fl.head()
            self._unflash(fl)
            fl = None
        if not head:
            ring = self.ring
            k = ring.count_to(n)
            if k:
                ring.forget(k)
                self.land(k)
        if jumped and self.store is not None:
            # the server knows seqs this device no longer remembers: persisted at once
            self.set_mark(self.next_seq + self.seq_block)
            self.save_meta()

    # ---- numbers for hello/health ----

    def held(self):
        fl = self._fl
        return self.ring.n + (fl.held() if fl is not None else 0)

    def first(self):
        fl = self._fl
        q = fl.first() if fl is not None else 0
        if not q and self.ring.n:
            q = self.ring.seq(0)
        if not q:
            return self.next_seq
        a = self.acked
        return q if q > a else a + 1
