"""The outbox's boot recovery: find the state a power cut (or a wipe, or an older firmware)
left on flash and take the numbering, the epoch, the segments and the gaps over from it.
Functions on an `outbox.Outbox` (`ob`) and its `DirStore` (`st`). Imported once by the Outbox
at boot and dropped again: its code is not on the heap while the board streams (nor while it
catches up from flash, when outbox_flash is)."""
import json
import os

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):  # type: ignore[misc]  # the stubs' const is generic
        return x

from fieldlink.outbox_flash import _declared, _entries, _index, _name, _p, _parse, _remove, \
    _scan, forget_acked

_META_V = const(2)  # meta v2: an epoch file was written with this state (v1: before epochs)
# meta.json lost with the epoch file intact: the seq mark is unknown, so numbering goes on this
# far above the newest seq on flash (declared `gap reboot`, an upper bound like any other).
# More readings than a year's at two a second; still a small int on an ESP32 (< 2**30).
_LOST_MARK_SKIP = const(1 << 26)
_BATCH = const(32)  # segments listed at a time while boot walks them in order


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
    _canonize(st)
    segs, readings, used, last = _count(st)
    meta = _load_meta(st)
    e = _load_epoch(st)
    if e:
        ob.epoch = e
    else:
        if e == "" or (meta and meta["v"] >= _META_V):
            # wipe: segments, then meta (a power cut in between still finds meta v2 without
            # an epoch, and the next boot finishes the job); then the new epoch file
            _wipe(st)
            _remove(st, "meta.json")
            ob.notice = "epoch file %s: new epoch %s, %d flash segments discarded" % (
                "corrupt" if e == "" else "lost", ob.epoch, segs)
            segs = readings = used = last = 0
            meta = None
        try:
            st.put("epoch", ob.epoch)
        except OSError as x:
            # Nothing can be kept on this flash (full of other files): run from RAM, which
            # makes every boot a new epoch, so a power cut never reuses a seq the server has.
            # The flash is tried again at the next boot.
            ob.store = None
            ob.flash_limit = 0
            ob.notice = "cannot write the epoch file (%s): outbox in RAM only, a new epoch " \
                "every boot" % x
            return
    # all counted, none listed yet: the first use lists the oldest (outbox_flash.refill)
    ob.flash_used += used
    ob._sq = segs
    ob._sn = readings
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
        _lost_mark(ob, last, meta is None, segs)
    elif segs:  # firmware before epochs, meta lost but data present: continue above it
        ob.next_seq = last + 1
    if ob.acked:
        forget_acked(ob, ob.acked)
    ob._mark = ob.next_seq + ob.seq_block
    # Nothing above the sent mark was ever sent (without one, from older firmware or a lost
    # meta.json, everything may have been): only that much may be on the server unacked.
    sent = meta.get("sent") if meta else None
    if sent is None:
        sent = ob.next_seq - 1
    ob._sent_mark = sent
    ob._sent_hi = max(min(sent, ob.next_seq - 1), ob.acked)
    ob.save_meta()


def _lost_mark(ob, last, gone, nsegs):
    """The epoch file is there but meta.json is unusable (or gone while segments exist: they
    are only written after it). The epoch and the segments are kept; what meta.json knew is
    not: the seq mark, the ack, the pending gaps, the dropped count and the boot count. So:
    continue far above the newest seq on flash (_LOST_MARK_SKIP), declare the skipped seqs
    and every seq below it that no segment holds as `gap reboot` (some may be stored on the
    server already: harmless, an upper bound), and say so in ob.notice."""
    ob.next_seq = last + _LOST_MARK_SKIP + 1
    # seqs missing inside segments (readings dropped from RAM before the spill: their gaps
    # were in meta.json); a segment that does not read is declared when it is loaded
    for a, b, c, _ in _ordered(ob.store):
        if c != b - a + 1:
            try:
                prev = a - 1
                for q in _index(ob.store, _name(a, b, c))[0]:
                    if q > prev + 1:
                        _gap_uncovered(ob, prev + 1, q - 1)
                    prev = q
                if prev < b:
                    _gap_uncovered(ob, prev + 1, b)
            except (OSError, ValueError):
                pass
    _declare_holes(ob)
    _gap_uncovered(ob, last + 1, ob.next_seq - 1)
    ob.notice = "meta.json %s: epoch %s and %d flash segments kept, seqs %d-%d declared " \
        "gap reboot, boot and dropped counts restart" % (
            "lost" if gone else "corrupt", ob.epoch, nsegs, last + 1, ob.next_seq - 1)


def _declare_holes(ob):
    """Seqs above the ack that lie between flash segments (or below the first) and in no
    declared gap: segments dropped after meta was last saved (drops are persisted with the
    seq mark, not per dropped segment: flash wear). Declared as `reboot` (may have been
    produced and lost), or the server's ack could never pass them. A segment wholly acked or
    declared (its removal after a drop failed: outbox_flash._drop_file) is removed now and
    not counted; if it will not go, outbox_flash skips it when it is loaded or dropped."""
    cur = ob.acked
    for a, b, c, size in _ordered(ob.store):
        if _declared(ob, a, b) and _remove(ob.store, _name(a, b, c)):
            ob._sq -= 1
            ob._sn -= c
            ob.flash_used -= size
        if a > cur + 1:
            _gap_uncovered(ob, cur + 1, a - 1)
        if b > cur:
            cur = b


def _ordered(st):
    """(first, last, count, bytes) of every segment, the oldest first, _BATCH of them listed at a
    time (a backlog of hundreds is walked without a table of them all)."""
    lo = 0
    while True:
        w = _scan(st, lo, _BATCH)
        k = len(w)
        for j in range(0, k, 4):
            yield w[j], w[j + 1], w[j + 2], w[j + 3]
        if k < 4 * _BATCH:
            return
        lo = w[k - 3] + 1


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


def _tidy(st):
    """Make the directory; remove what a power cut mid-write left (*.tmp), except a whole
    meta.json.tmp without meta.json: a cut between put's remove and rename (FAT). Keep it, or
    the numbering would restart below seqs already used. A tmp cut mid-write does not parse
    and is dropped."""
    try:
        os.mkdir(st.path)
    except OSError:
        pass  # exists
    tmps = [n for n, _ in _entries(st) if n[-4:] == ".tmp"]  # (few: one write at a time)
    for n in tmps:
        if n == "meta.json.tmp" and not _exists(st, "meta.json"):
            try:
                with st.file(n) as f:
                    json.loads(f.read())
                os.rename(_p(st, n), _p(st, "meta.json"))
                continue
            except (OSError, ValueError):
                pass
        _remove(st, n)


def _wipe(st):
    """Remove every file but the epoch and meta.json: a few names at a time (the directory
    may hold hundreds of segments), each batch listed whole before any removal."""
    last = None
    while True:
        batch = []  # type: list[str]
        for n, _ in _entries(st):
            if n != "epoch" and n != "meta.json" and len(batch) < 32:
                batch.append(n)
        if not batch or batch == last:  # (== last: they did not go; nothing more to do)
            return
        for n in batch:
            _remove(st, n)
        last = batch


def _exists(st, name):
    try:
        os.stat(_p(st, name))
        return True
    except OSError:
        return False


def _canonize(st):
    """Segment files whose names are not as outbox_flash._name makes them (zero-padded) are
    renamed to it: only those names are found again. A few at a time, each batch listed
    whole before anything is renamed."""
    last = None
    while True:
        batch = []  # type: list[tuple[str, str]]
        for n, _ in _entries(st):
            if len(batch) < 32 and n[:1] == "s" and n[-4:] != ".tmp" and _parse(n) is None:
                f = n[1:].split("_")
                try:
                    if len(f) == 3:
                        batch.append((n, _name(int(f[0]), int(f[1]), int(f[2]))))
                except ValueError:
                    pass
        if not batch or batch == last:
            return
        for n, canon in batch:
            try:
                os.rename(_p(st, n), _p(st, canon))
            except OSError:
                pass
        last = batch


def _count(st):
    """(segments, readings in them, their bytes, the newest seq in them)."""
    segs = readings = used = last = 0
    for n, size in _entries(st):
        s = _parse(n)
        if s is None:
            continue
        segs += 1
        readings += s[2]
        used += os.stat(_p(st, n))[6] if size is None else size
        if s[1] > last:
            last = s[1]
    return segs, readings, used, last


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
        for k, v in (("v", 1), ("boot", 0), ("mark", 1), ("dropped", 0), ("acked", 0),
                     ("sent", None)):
            v = m.get(k, v)
            if v is None and k == "sent":  # (meta.json from before the sent mark)
                continue
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
