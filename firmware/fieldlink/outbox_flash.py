"""The outbox's flash side: boot recovery, segment spill/reload/drop and the epoch file.

Functions on an `outbox.Outbox` (`ob`) and its `DirStore` (`st`). The Outbox imports this
module at boot and while the flash holds readings (or to spill), and drops it when the flash
holds none, so a board streaming with nothing spilled does not keep this code on its heap.
Files in the store's directory: segments `s<first>_<last>_<count>` (one reading per line,
oldest first), `meta.json` (seq mark, boot count, dropped count, ack, pending gaps) and `epoch`.

The head (segments loaded for sending) holds no object per reading: a segment's file is read
into one buffer and each "\n" becomes "," in place (JSON text has no raw newline), so a run of
its readings is already the body of a batch, sent as a view of the buffer like RAM's. Per
reading its seq and offset are in two arrays. A loaded segment is one list (see _E_*); the
buffers and arrays are reused through ob._fpool (up to _NBUF of them kept, allocated when the
flash is first read or spilled to while sending), so a catch-up after a long outage allocates
a few small objects per batch instead of a string per reading: on a small heap ~100 strings
for the window plus a loaded segment were what failed (MemoryError in the segment load).
"""
import json
from array import array

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):  # type: ignore[misc]  # the stubs' const is generic
        return x

try:
    import os
except ImportError:  # pragma: no cover
    import uos as os

_META_V = const(2)  # meta v2: an epoch file was written with this state (v1: before epochs)
# meta.json lost with the epoch file intact: the seq mark is unknown, so numbering goes on this
# far above the newest seq on flash (declared `gap reboot`, an upper bound like any other).
# More readings than a year's at two a second; still a small int on an ESP32 (< 2**30).
_LOST_MARK_SKIP = const(1 << 26)
_MIN_N = const(48)  # bytes of the shortest reading with its "\n" (as outbox._MIN_N)
# Loaded segments kept buffers for: a segment is loaded only while fewer are (or one is in
# the pool), so at most this many are loaded for sending. With 2 KB segments that is 40-50
# readings of the window in flight during a catch-up; the rest of the window waits for acks.
_NBUF = const(2)
_SLACK = const(16)  # a pooled buffer's bytes beyond seg_bytes (a file's size + 1 fits)
# A loaded segment: [last seq (from its name), file name, file bytes, buffer, seqs array,
# offsets array (reading j is buffer[offs[j]:offs[j + 1] - 1], the "," after it excluded),
# first reading not acked, readings held]
_E_BUF = const(3)
_E_QS = const(4)
_E_OFFS = const(5)
_E_K = const(6)
_E_N = const(7)


def _p(st, name):
    return st.path + "/" + name


def _seq_of(text):
    # readings are built by proto.reading(): '{"q":<seq>,...'
    return int(text[5:text.index(",")])


# ---- boot ----

def boot(ob):
    """Find the state on flash: keep the stored epoch, or store ob.epoch (a fresh one) when
    there is none:
    - no state at all (first boot, wiped flash): a new numbering;
    - state from firmware before epochs (meta v1, or segments without meta): it keeps its
      numbering, the server adopts the epoch unchanged;
    - an epoch-era state (meta v2) whose epoch file is gone, or a corrupt epoch file: the
      state's numbering cannot be named any more, so it is discarded (its segments belong
      to an unknown epoch; declaring them would be declaring someone else's seqs).
    Then take the numbering over from meta.json and the segments (see _lost_mark for an
    epoch whose meta.json is corrupt or gone)."""
    st = ob.store
    _tidy(st)
    segs = _segments(st)
    meta = _load_meta(st)
    e = _load_epoch(st)
    if e:
        ob.epoch = e
    else:
        if e == "" or (meta and meta["v"] >= _META_V):
            # wipe: segments, then meta (a power cut in between still finds meta v2 without
            # an epoch, and the next boot finishes the job); then the new epoch file
            for n in os.listdir(st.path):
                if n != "epoch" and n != "meta.json":
                    _remove(st, n)
            _remove(st, "meta.json")
            ob.notice = "epoch file %s: new epoch %s, %d flash segments discarded" % (
                "corrupt" if e == "" else "lost", ob.epoch, len(segs))
            segs = []
            meta = None
        st.put("epoch", ob.epoch)
    last = 0
    for s in segs:
        ob._segs.append(list(s))
        ob.flash_used += s[3]
        if s[1] > last:
            last = s[1]
    if meta:
        ob.boot = meta["boot"] + 1
        ob.dropped = meta["dropped"]
        ob.acked = meta["acked"]
        ob.gaps = meta["gaps"]
        ob.next_seq = max(meta["mark"], last + 1)
        _declare_holes(ob)
        # Everything between what is safe (on flash, acked or already declared) and the
        # mark may have been produced and lost with RAM: an upper bound, per the protocol.
        lo = max(last, ob.acked)
        for g in ob.gaps:
            lo = max(lo, g[1])
        if lo + 1 <= ob.next_seq - 1:
            ob.gaps.append([lo + 1, ob.next_seq - 1, "reboot", False])
    elif e and (meta is not None or segs):
        _lost_mark(ob, last, meta is None)
    elif segs:  # firmware before epochs, meta lost but data present: continue above it
        ob.next_seq = last + 1
    if ob.acked:
        forget_acked(ob, ob.acked)
    ob._mark = ob.next_seq + ob.seq_block
    ob._sent_hi = ob.next_seq - 1  # unknown what was sent before the reboot
    ob.save_meta()


def _lost_mark(ob, last, gone):
    """The epoch file is there but meta.json is unusable (or gone while segments exist: they
    are only written after it). The epoch and the segments are kept; what meta.json knew is
    not: the seq mark, the ack, the pending gaps, the dropped count and the boot count. So:
    continue far above the newest seq on flash (_LOST_MARK_SKIP), declare the skipped seqs
    and every seq below it that no segment holds as `gap reboot` (some may be stored on the
    server already: harmless, an upper bound), and say so in ob.notice."""
    ob.next_seq = last + _LOST_MARK_SKIP + 1
    # seqs missing inside segments (readings dropped from RAM before the spill: their gaps
    # were in meta.json); a segment that does not read is declared when it is loaded
    for s in ob._segs:
        if s[2] != s[1] - s[0] + 1:
            try:
                prev = s[0] - 1
                for t in _read_segment(ob.store, s[4]):
                    q = _seq_of(t)
                    if q > prev + 1:
                        _gap_uncovered(ob, prev + 1, q - 1)
                    prev = q
                if prev < s[1]:
                    _gap_uncovered(ob, prev + 1, s[1])
            except (OSError, ValueError):
                pass
    _declare_holes(ob)
    _gap_uncovered(ob, last + 1, ob.next_seq - 1)
    ob.notice = "meta.json %s: epoch %s and %d flash segments kept, seqs %d-%d declared " \
        "gap reboot, boot and dropped counts restart" % (
            "lost" if gone else "corrupt", ob.epoch, len(ob._segs), last + 1, ob.next_seq - 1)


def _declare_holes(ob):
    """Seqs above the ack that lie between flash segments (or below the first) and in no
    declared gap: segments dropped after meta was last saved (drops are persisted with the
    seq mark, not per dropped segment: flash wear). Declared as `reboot` (may have been
    produced and lost), or the server's ack could never pass them."""
    cur = ob.acked
    for s in ob._segs:  # oldest first
        if s[0] > cur + 1:
            _gap_uncovered(ob, cur + 1, s[0] - 1)
        if s[1] > cur:
            cur = s[1]


def _gap_uncovered(ob, a, b):
    """Declare a..b as `reboot` where no gap covers it yet."""
    for g in sorted(ob.gaps):
        if g[1] < a or g[0] > b:
            continue
        if g[0] > a:
            ob.gaps.append([a, g[0] - 1, "reboot", False])
        a = max(a, g[1] + 1)
    if a <= b:
        ob.gaps.append([a, b, "reboot", False])
    ob.gaps.sort()


# ---- spilling, reloading, dropping ----

def spill(ob, full_only):
    """Outbox.spill: chunks of RAM to flash; one meta write at the end if segments were
    dropped to make room."""
    d = ob.dropped
    ok = True
    while ob._rc and (not full_only or ob.ram_used >= ob.seg_bytes):
        if not spill_chunk(ob):
            ok = False
            break
    if ob.dropped != d:
        ob.save_meta()
    return ok


def spill_chunk(ob):
    """The oldest RAM readings, up to seg_bytes, to one new segment; False if they cannot
    go (flash full of what the server may hold, or the write failed)."""
    n = 0
    size = 0
    rn = ob._rn
    while n < ob._rc:
        k = rn[_slot(ob, n)]
        if n and size + k > ob.seg_bytes:
            break
        size += k
        n += 1
    if n == 0 or size > ob.flash_limit:
        return False
    while ob.flash_used + size > ob.flash_limit:
        if not _drop_segment(ob):
            return False  # flash holds only what the server may have: keep it
    rq = ob._rq
    ro = ob._ro
    mv = ob._mv
    last = rq[_slot(ob, n - 1)]
    name = "s%010d_%010d_%d" % (rq[_slot(ob, 0)], last, n)
    # Part of the chunk in flight: it must stay at the front of the queue, so it becomes a
    # loaded head segment (no unloaded segment can exist here), copied from RAM. Made before
    # anything changes: a MemoryError leaves the readings in RAM.
    e = None
    if ob._inflight > ob._hn:
        e = _get(ob, size, n, True)
        try:
            b = e[_E_BUF]
            qs = e[_E_QS]
            offs = e[_E_OFFS]
            w = 0
            for i in range(n):
                p = _slot(ob, i)
                k = rn[p]
                b[w:w + k] = mv[ro[p]:ro[p] + k]  # with its ","
                qs[i] = rq[p]
                offs[i] = w
                w += k
            offs[n] = w
            e[0] = last
            e[1] = name
            e[2] = size
            e[_E_K] = 0
            e[_E_N] = n
        except MemoryError:
            _put(ob, e)
            raise
    try:
        with ob.store.file(name + ".tmp", "wb") as f:
            for i in range(n):  # from RAM as it is: no segment-sized object on the heap
                p = _slot(ob, i)
                f.write(mv[ro[p]:ro[p] + rn[p] - 1])
                f.write(b"\n")
        os.rename(_p(ob.store, name + ".tmp"), _p(ob.store, name))
    except OSError:
        # flash full or failing: give the space back and keep the readings in RAM; the
        # caller drops the oldest (counted) instead of raising into the sampler
        _remove(ob.store, name + ".tmp")
        if e is not None:
            _put(ob, e)
        return False
    # Listed in one append (it either happens or changes nothing): a MemoryError here leaves
    # the readings in RAM (the file goes again) instead of gone from RAM and from the queue.
    try:
        if e is not None:
            ob._hsegs.append(e)
        else:
            ob._segs.append([rq[_slot(ob, 0)], last, n, size, name])
    except MemoryError:
        _remove(ob.store, name)
        if e is not None:
            _put(ob, e)
        raise
    ob.spills += 1
    ob.flash_used += size
    ob._ram_forget(n)
    if e is not None:
        ob._hn += n
    return True


def _drop_segment(ob):
    """Drop the oldest flash segment the server cannot hold yet; False if none."""
    segs = ob._segs
    j = 0
    while j < len(segs) and segs[j][0] <= ob._sent_hi:
        j += 1
    if j >= len(segs):
        return False
    s = segs.pop(j)
    if s[2] == s[1] - s[0] + 1:
        ob._add_gap(s[0], s[1], "dropped")
    else:
        # the segment has holes (readings dropped from RAM earlier, already declared):
        # declare exactly the seqs it holds so the dropped count stays exact
        try:
            qs = [_seq_of(t) for t in _read_segment(ob.store, s[4])]
        except (OSError, ValueError):
            qs = []
        for q in qs:
            ob._add_gap(q, q, "dropped")
    _remove(ob.store, s[4])
    ob.flash_used -= s[3]
    # No meta write here: the drop is persisted with the next seq mark (or at the end of
    # spill()); a power cut before that is caught at boot by _declare_holes.
    return True


def next_batch(ob, max_n, window):
    """Outbox.next_batch: the texts of what next_batch_view hands out (runs of the head,
    segments loaded as it empties, then RAM), as str (for tests and tools)."""
    out = []  # type: list[str]
    while len(out) < max_n:
        i = ob._inflight
        if not ob.next_batch_view(max_n - len(out), window):
            break
        for r in range(i, ob._inflight):
            out.append(_text(ob, r))
    return out


def head_view(ob, max_n, window):
    """Outbox.next_batch_view while the head or the flash holds readings not sent: a view
    of a run of one loaded segment's readings (joined with ","), "" when there is nothing
    to send now (the window is full, or no buffer is free until an ack), None when the head
    and the flash are all sent (RAM is next)."""
    room = window - ob._inflight
    if room > max_n:
        room = max_n
    if room <= 0:
        return ""
    while ob._inflight >= ob._hn:
        if not ob._segs:
            return None
        if not load_segment(ob):
            return ""
    i = ob._inflight
    for e in ob._hsegs:
        c = e[_E_N] - e[_E_K]
        if i < c:
            break
        i -= c
    j = e[_E_K] + i
    m = e[_E_N]
    if m > j + room:
        m = j + room
    offs = e[_E_OFFS]
    v = memoryview(e[_E_BUF])[offs[j]:offs[m] - 1]  # (allocates: before the bookkeeping)
    ob._inflight += m - j
    q = e[_E_QS][m - 1]
    if q > ob._sent_hi:
        ob._sent_hi = q
    return v


def _slot(ob, i):
    """Where RAM reading i (0 = oldest) is in the index ring (see Outbox.__init__)."""
    return (ob._rh + i) % ob._cap


def _text(ob, r):
    """Reading r of the queue (0 = oldest held) as str: a new object, for next_batch."""
    if r < ob._hn:
        for e in ob._hsegs:
            c = e[_E_N] - e[_E_K]
            if r < c:
                j = e[_E_K] + r
                offs = e[_E_OFFS]
                return str(memoryview(e[_E_BUF])[offs[j]:offs[j + 1] - 1], "utf-8")
            r -= c
    p = _slot(ob, r - ob._hn)
    o = ob._ro[p]
    return str(ob._mv[o:o + ob._rn[p] - 1], "utf-8")


def _get(ob, nbytes, lines, force):
    """A loaded-segment list with room for nbytes and `lines` readings: from the pool, or
    new when the pool has none that fits and (unless force) fewer than _NBUF segments are
    loaded; None otherwise. Nothing changes if it raises MemoryError."""
    pool = ob._fpool
    if pool is None:
        pool = ob._fpool = [None] * _NBUF
    for x in range(_NBUF):
        e = pool[x]
        if e is not None and len(e[_E_BUF]) >= nbytes:
            if len(e[_E_OFFS]) <= lines:  # many short readings: arrays for them
                w = len(e[_E_BUF])
                qs, offs = _arrays(lines, w)
                e[_E_QS] = qs
                e[_E_OFFS] = offs
            pool[x] = None
            return e
    if not force and len(ob._hsegs) >= _NBUF:
        return None
    w = ob.seg_bytes + _SLACK
    if w < nbytes:
        w = nbytes
    qs, offs = _arrays(max(lines, w // _MIN_N + 1), w)
    return [0, "", 0, bytearray(w), qs, offs, 0, 0]


def _arrays(lines, nbytes):
    """Seqs and offsets for `lines` readings (offsets: one more, the end) in nbytes."""
    return (array("I", bytes(4 * lines)),
            array("H", bytes(2 * lines + 2)) if nbytes < 65536 else
            array("I", bytes(4 * lines + 4)))


def _put(ob, e):
    """A loaded-segment list back to the pool (no allocation), or to the gc if it is full."""
    pool = ob._fpool
    for x in range(_NBUF):
        if pool[x] is None:
            pool[x] = e
            return


def _seq_at(b, o, end):
    """The seq of the reading at b[o:end]: proto.reading() starts it '{"q":<seq>,'."""
    q = 0
    i = o + 5
    while i < end and 48 <= b[i] <= 57:
        q = q * 10 + b[i] - 48
        i += 1
    if i == o + 5 or i >= end or b[i] != 44 or b[o + 2] != 113:  # digits, ","; "q"
        raise ValueError("segment: not a reading")
    return q


def load_segment(ob):
    """The oldest unloaded segment into the head (its readings above the ack). True when
    the queue moved on (loaded, or an unreadable segment declared), False when no buffer
    is free (an ack frees one)."""
    s = ob._segs[0]
    nb = s[3]
    e = _get(ob, nb + 1, 0, False)  # + 1: a last line without "\n" gets its ","
    if e is None:
        return False
    try:
        b = e[_E_BUF]
        mv = memoryview(b)
        with ob.store.file(s[4], "rb") as f:
            nb = f.readinto(mv[:nb + 1])
        if nb > s[3]:
            raise ValueError("segment: grew")
        lines = b.count(b"\n", 0, nb) + 1
        if len(e[_E_OFFS]) <= lines:
            qs, offs = _arrays(lines, len(b))
            e[_E_QS] = qs
            e[_E_OFFS] = offs
        qs = e[_E_QS]
        offs = e[_E_OFFS]
        # lines to readings in place: "\n" -> ","; empty lines are closed up
        r = 0
        w = 0
        j = 0
        while r < nb:
            t = b.find(b"\n", r, nb)
            if t < 0:
                t = nb
            if t > r:
                if w != r:
                    mv[w:w + t - r] = mv[r:t]
                qs[j] = _seq_at(b, w, w + t - r)
                offs[j] = w
                w += t - r
                b[w] = 44  # ","
                w += 1
                j += 1
            r = t + 1
        offs[j] = w
        k = 0
        while k < j and qs[k] <= ob.acked:
            k += 1
    except (OSError, ValueError):
        _put(ob, e)
        ob._segs.pop(0)
        # unreadable: these seqs can never be sent, so declare them rather than leave a
        # hole that would stop the server's cumulative ack for good
        _remove(ob.store, s[4])
        ob.flash_used -= s[3]
        ob._add_gap(max(s[0], ob.acked + 1), s[1], "reboot")
        return True
    except MemoryError:
        _put(ob, e)
        raise
    if k == j:  # all acked already (the ack came before a reboot)
        _put(ob, e)
        _remove(ob.store, s[4])
        ob._segs.pop(0)
        ob.flash_used -= s[3]
        return True
    e[0] = s[1]
    e[1] = s[4]
    e[2] = s[3]
    e[_E_K] = k
    e[_E_N] = j
    try:
        ob._hsegs.append(e)  # the one step that commits (or changes nothing)
    except MemoryError:
        _put(ob, e)
        raise
    ob._segs.pop(0)
    ob._hn += j - k
    return True


def forget_acked(ob, n):
    """Outbox.ack's part for the flash: the head's readings <= n, then the segments the ack
    covers (loaded ones, then unloaded ones once nothing is loaded: they are behind the
    head in the queue)."""
    hs = ob._hsegs
    for e in hs:
        k = e[_E_K]
        qs = e[_E_QS]
        while k < e[_E_N] and qs[k] <= n:
            k += 1
        d = k - e[_E_K]
        if d:
            e[_E_K] = k
            ob._hn -= d
            # at once: what follows may fail (flash), and must not leave _inflight past them
            ob._inflight = ob._inflight - d if ob._inflight > d else 0
    # The file first: if that fails (MemoryError, flash), the segment is still listed.
    while hs and hs[0][_E_K] >= hs[0][_E_N]:
        _remove(ob.store, hs[0][1])
        e = hs.pop(0)
        ob.flash_used -= e[2]
        _put(ob, e)
    segs = ob._segs
    while segs and segs[0][1] <= n and not hs:
        _remove(ob.store, segs[0][4])
        ob.flash_used -= segs.pop(0)[3]


# ---- files ----

def _tidy(st):
    """Make the directory; remove what a power cut mid-write left (*.tmp), except a whole
    meta.json.tmp without meta.json: a cut between put's remove and rename (FAT). Keep it, or
    the numbering would restart below seqs already used. A tmp cut mid-write does not parse
    and is dropped."""
    try:
        os.mkdir(st.path)
    except OSError:
        pass  # exists
    names = os.listdir(st.path)
    for n in names:
        if n.endswith(".tmp"):
            if n == "meta.json.tmp" and "meta.json" not in names:
                try:
                    with st.file(n) as f:
                        json.loads(f.read())
                    os.rename(_p(st, n), _p(st, "meta.json"))
                    continue
                except (OSError, ValueError):
                    pass
            _remove(st, n)


def _segments(st):
    """[(first, last, count, nbytes, name)] oldest first."""
    out = []
    for n in os.listdir(st.path):
        if n.startswith("s") and not n.endswith(".tmp"):
            try:
                a, b, c = n[1:].split("_")
                out.append((int(a), int(b), int(c), os.stat(_p(st, n))[6], n))
            except (ValueError, OSError):
                pass
    out.sort()
    return out


def _read_segment(st, name):
    out = []
    with st.file(name) as f:
        for ln in f:  # line by line: no segment-sized string on a fragmented heap
            ln = ln.rstrip("\n")
            if ln:
                out.append(ln)
    return out


def _remove(st, name):
    try:
        os.remove(_p(st, name))
    except OSError:
        pass


def _load_meta(st):
    """meta.json as a dict with every key checked (gaps as [from, to, why, False]); None if
    there is no meta.json; "" if it is there but does not parse or holds something else."""
    try:
        with st.file("meta.json") as f:
            text = f.read()
    except OSError:
        return None
    except (ValueError, UnicodeError):
        return ""
    try:
        m = json.loads(text)
        meta = {"gaps": [[int(g[0]), int(g[1]), str(g[2]), False]
                         for g in m.get("gaps", ())]}  # type: dict
        for k, v in (("v", 1), ("boot", 0), ("mark", 1), ("dropped", 0), ("acked", 0)):
            v = m.get(k, v)
            if not isinstance(v, int) or v < 0:
                return ""
            meta[k] = v
        return meta
    except (ValueError, TypeError, AttributeError, IndexError, KeyError):
        return ""


def _load_epoch(st):
    """The epoch text; None if there is no epoch file; "" if it is there but unreadable
    or not an epoch (1-16 chars of [0-9a-f], the protocol's limits)."""
    try:
        with st.file("epoch") as f:
            e = f.read().strip()
    except OSError:
        return None
    except (ValueError, UnicodeError):
        return ""
    if not 1 <= len(e) <= 16:
        return ""
    for c in e:
        if c not in "0123456789abcdef":
            return ""
    return e
