"""The outbox's flash side: boot recovery, segment spill/reload/drop and the epoch file.

Functions on an `outbox.Outbox` (`ob`) and its `DirStore` (`st`). The Outbox imports this
module at boot and while the flash holds readings (or to spill), and drops it when the flash
holds none, so a board streaming with nothing spilled does not keep this code on its heap.
Files in the store's directory: segments `s<first>_<last>_<count>` (one reading per line,
oldest first), `meta.json` (seq mark, boot count, dropped count, ack, pending gaps) and `epoch`.
"""
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

_META_V = const(2)  # meta v2: an epoch file was written with this state (v1: before epochs)
# meta.json lost with the epoch file intact: the seq mark is unknown, so numbering goes on this
# far above the newest seq on flash (declared `gap reboot`, an upper bound like any other).
# More readings than a year's at two a second; still a small int on an ESP32 (< 2**30).
_LOST_MARK_SKIP = const(1 << 26)


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
    qs = [ob._rq[_slot(ob, i)] for i in range(n)]
    lines = [_text(ob, i) for i in range(n)]
    name = "s%010d_%010d_%d" % (qs[0], qs[-1], n)
    try:
        with ob.store.file(name + ".tmp", "w") as f:
            for ln in lines:  # line by line: no segment-sized string on the heap
                f.write(ln)
                f.write("\n")
        os.rename(_p(ob.store, name + ".tmp"), _p(ob.store, name))
    except OSError:
        # flash full or failing: give the space back and keep the readings in RAM; the
        # caller drops the oldest (counted) instead of raising into the sampler
        _remove(ob.store, name + ".tmp")
        return False
    # Where the chunk goes, built before anything changes: a MemoryError here leaves the
    # readings in RAM (the file goes again) instead of gone from RAM and from the queue.
    head = ob._inflight > len(ob._hq)
    try:
        if head:
            # part of the chunk is in flight: it must stay at the front of the queue, so it
            # becomes a loaded head segment (no unloaded segment can exist here)
            nq = ob._hq + qs
            nd = ob._hd + lines
            hs = ob._hsegs + [[qs[-1], name, size]]
        else:
            segs = ob._segs + [[qs[0], qs[-1], n, size, name]]
    except MemoryError:
        _remove(ob.store, name)
        raise
    ob.spills += 1
    ob.flash_used += size
    ob._ram_forget(n)
    if head:
        ob._hq = nq
        ob._hd = nd
        ob._hsegs = hs
    else:
        ob._segs = segs
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
    """Outbox.next_batch: the head (loaded from flash), segments loaded as it empties, then
    RAM."""
    room = window - ob._inflight
    if room > max_n:
        room = max_n
    out = []  # type: list[str]
    hq = ob._hq
    i = ob._inflight
    while len(out) < room:
        if i < len(hq):
            out.append(ob._hd[i])
            i += 1
        elif ob._segs:
            load_segment(ob)
            hq = ob._hq  # a new list (see load_segment)
        elif i - len(hq) < ob._rc:
            out.append(_text(ob, i - len(hq)))
            i += 1
        else:
            break
    ob._inflight = i
    if out:
        j = i - 1
        q = hq[j] if j < len(hq) else ob._rq[_slot(ob, j - len(hq))]
        if q > ob._sent_hi:
            ob._sent_hi = q
    return out


def _slot(ob, i):
    """Where RAM reading i (0 = oldest) is in the index ring (see Outbox.__init__)."""
    return (ob._rh + i) % ob._cap


def _text(ob, i):
    """RAM reading i as str (a new object: only for the batch being sent or spilled)."""
    p = _slot(ob, i)
    o = ob._ro[p]
    return str(ob._mv[o:o + ob._rn[p] - 1], "utf-8")


def load_segment(ob):
    """The oldest unloaded segment into the head (what is above the ack)."""
    s = ob._segs[0]
    try:
        lines = _read_segment(ob.store, s[4])  # a MemoryError here changes nothing
        qs = [_seq_of(t) for t in lines]
    except (OSError, ValueError):
        ob._segs.pop(0)
        # unreadable: these seqs can never be sent, so declare them rather than leave a
        # hole that would stop the server's cumulative ack for good
        _remove(ob.store, s[4])
        ob.flash_used -= s[3]
        ob._add_gap(max(s[0], ob.acked + 1), s[1], "reboot")
        return
    # New lists first, then swapped in: a MemoryError midway must not leave the head's seqs
    # and texts out of step (texts sent under the wrong seqs: a batch out of order).
    nq = []
    nd = []
    for i in range(len(qs)):
        if qs[i] > ob.acked:
            nq.append(qs[i])
            nd.append(lines[i])
    nq = ob._hq + nq
    nd = ob._hd + nd
    hs = ob._hsegs + [[s[1], s[4], s[3]]]
    ob._hq = nq
    ob._hd = nd
    ob._hsegs = hs
    ob._segs.pop(0)


def forget_acked(ob, n):
    """Remove the segments the ack n covers: loaded ones, then unloaded ones once the head
    is empty (they are behind it in the queue)."""
    # The file first: if that fails (MemoryError, flash), the segment is still listed.
    hs = ob._hsegs
    while hs and hs[0][0] <= n:
        _remove(ob.store, hs[0][1])
        ob.flash_used -= hs.pop(0)[2]
    segs = ob._segs
    while segs and segs[0][1] <= n and not ob._hq:
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
