"""The outbox's flash side: segment spill/reload/drop (boot recovery is in outbox_boot).

Functions on an `outbox.Outbox` (`ob`) and its `DirStore` (`st`). The Outbox imports this
module at boot and while the flash holds readings (or to spill), and drops it when the flash
holds none, so a board streaming with nothing spilled does not keep this code on its heap.
Files in the store's directory: segments `s<first>_<last>_<count>` (one reading per line,
oldest first), `meta.json` (seq mark, boot count, dropped count, ack, pending gaps) and `epoch`.
"""
import os
from array import array

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):  # type: ignore[misc]  # the stubs' const is generic
        return x

# The oldest segments not loaded yet are listed in RAM (Outbox._segs), at most this many; the
# newer ones are only counted (_sq segments, _sn readings) and found on flash again by their
# names when these are used up. RAM for the table is then the same for a backlog of 30
# segments or of 3000 (a long outage on a big flash outbox).
_WINDOW = const(16)
_NONE = array("Q")  # assigned over a segment's four entries in ob._segs: removed in place


def _p(st, name):
    return st.path + "/" + name


def _name(first, last, count):
    """A segment's file name (zero-padded: names sort like the seqs)."""
    return "s%010d_%010d_%d" % (first, last, count)


def _parse(n):
    """(first, last, count) from a segment's name as _name makes it, else None. Seqs take
    ten digits, more from 10**10 on (~231 days at one reading every 2 ms): without a leading
    zero then (another name for the same segment would not be found by _name)."""
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


def _entries(st):
    """(name, size or None) of each file in the directory, one at a time where the port
    can (a list of every name of a big backlog would be tens of KB of heap)."""
    ild = getattr(os, "ilistdir", None)  # (CPython has none)
    if ild is None:
        for n in os.listdir(st.path):
            yield n, None
    else:
        for e in ild(st.path):
            yield e[0], (e[3] if len(e) > 3 else None)  # (littlefs and FAT give the size)


def _scan(st, lo, k):
    """The k oldest segments on flash whose first seq is >= lo, flat as in Outbox._segs."""
    out = array("Q")
    for n, size in _entries(st):
        s = _parse(n)
        if s is None or s[0] < lo:
            continue
        a = s[0]
        j = len(out)
        if j >= 4 * k and a > out[j - 4]:
            continue  # not among the k oldest
        while j and out[j - 4] > a:
            j -= 4
        if size is None:
            size = os.stat(_p(st, n))[6]
        out[j:j] = array("Q", (a, s[1], s[2], size))
        if len(out) > 4 * k:
            out[4 * k:] = _NONE
    return out


def refill(ob):
    """The listed segments are used up: list the next oldest from flash (a MemoryError
    here changes nothing). If fewer are found than were counted, the count was off (files
    gone): it is set to what is there."""
    w = _scan(ob.store, ob._sfrom, _WINDOW)
    k = len(w)
    sq = 0
    sn = 0
    if k >= 4 * _WINDOW:
        n = 0
        for j in range(2, k, 4):
            n += w[j]
        sq = max(ob._sq - k // 4, 0)
        sn = max(ob._sn - n, 0)
    ob._segs.extend(w)  # (empty before: only called then)
    ob._sq = sq
    ob._sn = sn
    if k:
        ob._sfrom = w[k - 3] + 1


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
    name = _name(qs[0], qs[-1], n)
    mv = ob._mv
    try:
        # straight from the RAM buffer, reading by reading: no text or segment-sized string
        # on the heap
        with ob.store.file(name + ".tmp", "wb") as f:
            for i in range(n):
                p = _slot(ob, i)
                o = ob._ro[p]
                f.write(mv[o:o + ob._rn[p] - 1])
                f.write(b"\n")
        os.rename(_p(ob.store, name + ".tmp"), _p(ob.store, name))
    except OSError:
        # flash full or failing: give the space back and keep the readings in RAM; the
        # caller drops the oldest (counted) instead of raising into the sampler
        _remove(ob.store, name + ".tmp")
        return False
    # Where the chunk goes, built before anything changes: a MemoryError here leaves the
    # readings in RAM (the file goes again) instead of gone from RAM and from the queue.
    head = ob._inflight > len(ob._hq)
    counted = False
    try:
        if head:
            # part of the chunk is in flight: it must stay at the front of the queue, so it
            # becomes a loaded head segment (no unloaded segment can exist here), its readings
            # found by their offsets in the file just written (RAM lengths include the ",",
            # the file has a newline in its place)
            offs = []
            o = 0
            for i in range(n):
                offs.append(o)
                o += ob._rn[_slot(ob, i)]
            nq = ob._hq + qs
            no = ob._ho + offs
            hs = ob._hsegs + [[qs[-1], name, size]]
        elif not ob._sq and len(ob._segs) < 4 * _WINDOW:
            # listed (in place, and the last step that allocates: nothing below can fail)
            ob._segs.extend(array("Q", (qs[0], qs[-1], n, size)))
        else:
            counted = True  # found on flash again when the listed ones are used up
    except MemoryError:
        _remove(ob.store, name)
        raise
    ob.spills += 1
    ob.flash_used += size
    ob._ram_forget(n)
    if counted:
        ob._sq += 1
        ob._sn += n
    else:
        ob._sfrom = qs[-1] + 1  # (what is older is listed, loaded or gone)
        if head:
            ob._hq = nq
            ob._ho = no
            ob._hsegs = hs
    return True


def _drop_head(ob):
    """Drop the oldest loaded (head) segment none of whose readings is in flight or may be
    on the server (all above _sent_hi): the head's segments are the oldest on flash, so they
    go before any listed one. A head segment that also holds readings the server may have is
    kept whole, like a listed segment across the mark: its file stays for those, and
    dropping its unsent rest would free nothing. False if none can go."""
    hq = ob._hq
    hs = ob._hsegs
    i = 0  # index in hq of segment x's first held reading
    for x in range(len(hs)):
        last = hs[x][0]
        j = i
        while j < len(hq) and hq[j] <= last:
            j += 1
        if i >= ob._inflight and (i == j or hq[i] > ob._sent_hi):
            break
        i = j
    else:
        return False
    # Declared before the readings leave the head (as in _drop_segment): a MemoryError at a
    # new gap leaves them held. A run without holes is one gap.
    if j > i:
        if hq[j - 1] - hq[i] == j - 1 - i:
            ob._add_gap(hq[i], hq[j - 1], "dropped")
        else:
            for k in range(i, j):
                ob._add_gap(hq[k], hq[k], "dropped")
    ho = ob._ho
    while j > i:  # in step, by pops (no allocation; see Outbox.ack)
        hq.pop(i)
        ho.pop(i)
        j -= 1
    s = hs.pop(x)
    _drop_file(ob, s[1], s[2])
    return True


def _drop_segment(ob):
    """Drop the oldest flash segment the server cannot hold yet; False if none."""
    if _drop_head(ob):
        return True
    if not ob._segs and ob._sq:
        refill(ob)
    segs = ob._segs
    j = 0
    while j < len(segs) and segs[j] <= ob._sent_hi:
        j += 4
    if j < len(segs):
        a = segs[j]
        b = segs[j + 1]
        c = segs[j + 2]
        size = segs[j + 3]
    elif ob._sq:
        # Every listed segment may be on the server (at or below the sent mark, kept after
        # a reboot): the oldest of the unlisted ones above the mark goes, found on flash.
        # (Unlisted ones may be below it too: 16 segments are fewer than a window's or a
        # sent mark's block of readings when segments are small.)
        lo = ob._sfrom
        if lo <= ob._sent_hi:
            lo = ob._sent_hi + 1
        # The oldest _WINDOW of them are listed once and kept in ob._dq ([_sfrom, lo, the
        # segments, _sq then]) for the drops that follow (every push on a full flash asks):
        # newer segments spilled meanwhile are newer than all of them. Listed again when
        # _sfrom or the mark moved, or when they are used up and more were spilled since.
        dq = ob._dq
        if dq is None or dq[0] != ob._sfrom or dq[1] != lo or (not dq[2] and dq[3] != ob._sq):
            w = _scan(ob.store, lo, _WINDOW)
            if not w and lo == ob._sfrom:
                ob._sq = ob._sn = 0  # (the count was off: nothing there)
            dq = ob._dq = [ob._sfrom, lo, w, ob._sq]
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
    name = _name(a, b, c)
    # Declared before it leaves the list: a MemoryError between the two then leaves a
    # segment declared twice (counted, sent again), never one gone undeclared.
    if _declared(ob, a, b):
        pass  # a file an earlier drop could not remove (_drop_file): not declared again
    elif c == b - a + 1:
        ob._add_gap(a, b, "dropped")
    else:
        # the segment has holes (readings dropped from RAM earlier, already declared):
        # declare exactly the seqs it holds so the dropped count stays exact
        try:
            qs = _index(ob.store, name)[0]
        except (OSError, ValueError):
            qs = None  # which seqs it held cannot be read: declared like an unreadable load
        if qs is None:
            ob._add_gap(max(a, ob.acked + 1), b, "reboot")
        else:
            for q in qs:
                ob._add_gap(q, q, "dropped")
    if j < 0:
        w[0:4] = _NONE  # (w: ob._dq's list, as above)
        ob._sq -= 1
        ob._sn -= c
        dq[3] = ob._sq
    else:
        segs[j:j + 4] = _NONE
    _drop_file(ob, name, size)
    return True


def _drop_file(ob, name, size):
    """Remove the file of a segment just declared dropped. No meta write when that works:
    the drop is persisted with the next seq mark (or at the end of spill()), and a power cut
    before that is caught at boot by outbox_boot._declare_holes (a hole, `gap reboot`).
    When the removal fails (OSError) the file stays, and a boot that did not know of the
    drop would load it and send readings the server may have recorded as dropped. So then
    meta.json is saved before anything more is sent (_meta_dirty: at the end of this push,
    or by pending_gaps/next_batch first): one write per failed removal, nothing on the
    usual path and no RAM; boot then removes the segment (wholly declared), and load and
    drop skip it if that fails too (_declared). The bytes count as freed all the same: a
    flash that keeps failing shows as failed writes (handled as a full filesystem), not as
    every segment dropped in turn for room that never comes."""
    if not _remove(ob.store, name):
        ob._meta_dirty = True
    ob.flash_used -= size


def _declared(ob, a, b):
    """True if every seq a..b is acked or in a declared gap: a segment's file left by a
    failed removal after its drop (nothing in it may be sent or declared again)."""
    if a <= ob.acked:
        a = ob.acked + 1
    gs = ob.gaps
    k = 0
    while a <= b and k < len(gs):
        g = gs[k]
        if g[0] <= a <= g[1]:
            a = g[1] + 1
            k = 0  # (the gaps are not always in order)
        else:
            k += 1
    return a > b


def next_batch(ob, max_n, window, raw=False):
    """Outbox.next_batch: the head (read from its segment files), segments loaded as it
    empties, then RAM. The readings as str, or with `raw` as bytes that end in one separator
    byte (the file's newline, the RAM buffer's comma): what the sender copies into its batch
    as they are, with no second copy of each reading to strip or encode it."""
    room = window - ob._inflight
    if room > max_n:
        room = max_n
    out = []  # type: list
    i = ob._inflight
    while len(out) < room:
        hn = len(ob._hq)
        if i < hn:
            k = _read_run(ob, i, room, out, raw)
            if k > 0:
                i += k  # (else the rest of an unreadable segment left the head: look again)
        elif ob._segs or ob._sq:
            try:
                load_segment(ob)
            except MemoryError:
                # No block for the head's longer lists (~700 B at 96k, catching up): send
                # what is here, or wait for the acks in flight to shorten them, and load
                # then. Only with neither is it the sender's failure (a reconnect each time
                # it was, at 96k ~50 readings per connection).
                if not out and i == 0:
                    raise
                break
        elif i - hn < ob._rc:
            out.append(_text(ob, i - hn, raw))
            i += 1
        else:
            break
    # (nothing above changed the outbox but a load or an unreadable segment, each complete
    # in itself: a MemoryError leaves _inflight as it was and the readings go next time)
    if out:
        j = i - 1
        hq = ob._hq
        q = hq[j] if j < len(hq) else ob._rq[_slot(ob, j - len(hq))]
        if not ob.may_send(q):
            return []
        if q > ob._sent_hi:
            ob._sent_hi = q
    ob._inflight = i
    return out


def _read_run(ob, i, room, out, raw):
    """Head readings i.. of one segment, up to `room`, read from its file into `out`: the
    head keeps only where they are (seq and byte offset), so their texts are on the heap
    only while a batch is built (read again after a reconnect: flash reads do not wear it).
    The count read, or -1 if the file was unreadable (its rest is declared and dropped)."""
    hq = ob._hq
    q = hq[i]
    for s in ob._hsegs:
        if s[0] >= q:
            break
    last = s[0]
    k = len(out)
    try:
        with ob.store.file(s[1], "rb") as f:
            f.seek(ob._ho[i])
            j = i
            while len(out) < room and j < len(hq) and hq[j] <= last:
                t = f.readline()
                if t[-1:] != b"\n":
                    raise ValueError  # the file is shorter than when it was indexed
                if len(t) > 1:
                    if int(t[5:t.index(b",")]) != hq[j]:  # (see _index)
                        raise ValueError
                    out.append(t if raw else str(t[:-1], "utf-8"))
                    j += 1
    except (OSError, ValueError):
        del out[k:]
        _lose_head(ob, i, last)
        return -1
    return len(out) - k


def _lose_head(ob, i, last):
    """Head readings i.. up to seq `last` (one segment's rest) cannot be read: declared
    (they can never be sent; an undeclared hole would stop the server's cumulative ack for
    good), then dropped from the head. Its file goes with the ack over the gap."""
    hq = ob._hq
    j = i
    while j < len(hq) and hq[j] <= last:
        j += 1
    ob._add_gap(hq[i], last, "reboot")  # (first: it may fail, the deletes do not)
    ho = ob._ho
    while j > i:  # in step, by pops (no allocation; see Outbox.ack)
        hq.pop(i)
        ho.pop(i)
        j -= 1


def _slot(ob, i):
    """Where RAM reading i (0 = oldest) is in the index ring (see Outbox.__init__)."""
    return (ob._rh + i) % ob._cap


def _text(ob, i, raw):
    """RAM reading i as str, or raw: bytes with its "," (a new object: only for the batch
    being sent)."""
    p = _slot(ob, i)
    o = ob._ro[p]
    if raw:
        return ob._buf[o:o + ob._rn[p]]  # (one copy; a view of _mv would be a second object)
    return str(ob._mv[o:o + ob._rn[p] - 1], "utf-8")


def load_segment(ob):
    """The oldest unloaded segment into the head (what is above the ack): its seqs and
    where each reading starts in the file, no texts."""
    segs = ob._segs
    if not segs:
        refill(ob)
        if not segs:
            return  # (the count was off: set right by refill)
    a = segs[0]
    b = segs[1]
    size = segs[3]
    name = _name(a, b, segs[2])
    try:
        qs, offs = _index(ob.store, name)  # a MemoryError here changes nothing
    except (OSError, ValueError):
        # unreadable: these seqs can never be sent, so declare them rather than leave a
        # hole that would stop the server's cumulative ack for good
        ob._add_gap(max(a, ob.acked + 1), b, "reboot")
        segs[0:4] = _NONE
        _remove(ob.store, name)
        ob.flash_used -= size
        return
    # New lists first, then swapped in: a MemoryError midway must not leave the head's seqs
    # and offsets out of step (texts sent under the wrong seqs: a batch out of order), nor
    # the segment both in the head and still listed (sent twice, the second time out of
    # order).
    k = 0
    while k < len(qs) and qs[k] <= ob.acked:
        k += 1
    if k < len(qs) and _declared(ob, qs[k], b):
        k = len(qs)  # dropped, its file left (_drop_file): held by nothing, gone at the ack
    nq = ob._hq + qs[k:]
    no = ob._ho + offs[k:]
    hs = ob._hsegs + [[b, name, size]]
    segs[0:4] = _NONE
    ob._hq = nq
    ob._ho = no
    ob._hsegs = hs


def forget_acked(ob, n):
    """Remove the segments the ack n covers: loaded ones, then unloaded ones once the head
    is empty (they are behind it in the queue)."""
    # The file first: if that fails (MemoryError, flash), the segment is still listed.
    hs = ob._hsegs
    while hs and hs[0][0] <= n:
        _remove(ob.store, hs[0][1])
        ob.flash_used -= hs.pop(0)[2]
    segs = ob._segs
    while not ob._hq:
        if not segs:
            if not ob._sq:
                break
            refill(ob)  # (an ack over unlisted segments: at boot, from meta.json)
            if not segs:
                break
        if segs[1] > n:
            break
        name = _name(segs[0], segs[1], segs[2])
        size = segs[3]
        segs[0:4] = _NONE
        ob.flash_used -= size
        _remove(ob.store, name)  # (a file left by a failure here goes at the next boot)


# ---- files ----

def _index(st, name):
    """A segment's seqs and the byte offset of each reading's line, oldest first."""
    qs = []
    offs = []
    o = 0
    with st.file(name, "rb") as f:
        while True:  # line by line: no segment-sized string on a fragmented heap
            ln = f.readline()
            if not ln:
                break
            if ln != b"\n":
                # readings are built by proto.reading(): '{"q":<seq>,...'
                qs.append(int(ln[5:ln.index(b",")]))
                offs.append(o)
            o += len(ln)
    return qs, offs


def _remove(st, name):
    """False if the file could not be removed."""
    try:
        os.remove(_p(st, name))
        return True
    except OSError:
        return False
