"""The outbox's boot recovery: find the state a power cut (or a wipe, or an older firmware)
left on flash and take the numbering, the epoch, the segments and the gaps over from it.
The Outbox loads this module once at boot and drops it again: its code is not on the heap
while the board streams. Every file operation goes through the store (DirStore)."""
import json

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):  # type: ignore[misc]  # the stubs' const is generic
        return x

from fieldlink.outbox.flash import declared, index, name, parse, scan
from fieldlink.outbox.core import META_V

# meta.json lost with the epoch file intact: the seq mark is unknown, so numbering goes on
# this far above the newest seq on flash (declared `gap reboot`, an upper bound like any
# other): more readings than a year's at two a second, still a small int on an ESP32.
_LOST_MARK_SKIP = const(1 << 26)
_BATCH = const(32)  # segments listed at a time while boot walks them in order


class Recovery:
    """One boot's recovery of store `st` into a flash.Segments. After run(): `state` (the
    ledger's: boot, dropped, acked, gaps, next seq, sent mark), `epoch` (the stored one, or
    the fresh one given, now stored), `notice` (what the app should log as a WARN, or None)
    and `kept` (False: nothing can be stored on this flash, the outbox runs from RAM)."""

    def __init__(self, st, segs):
        self.st = st
        self.segs = segs
        self.epoch = None
        self.notice = None
        self.kept = True
        self.acked = 0
        self.gaps = []       # type: list
        self.state = (1, 0, 0, self.gaps, 1, None)  # the ledger's, as Ledger() takes it

    def run(self, epoch):
        """Keep the stored epoch, or store `epoch` (a fresh one) when there is none:
        - no state at all (first boot, wiped flash): a new numbering;
        - state from firmware before epochs (meta v1, or segments without meta): it keeps
          its numbering, the server adopts the epoch unchanged;
        - an epoch-era state (meta v2) whose epoch file is gone, or a corrupt epoch file:
          the state's numbering cannot be named any more, so it is discarded (declaring
          its segments would be declaring someone else's seqs).
        Then take the numbering over from meta.json and the segments (see _lost_mark for
        an epoch whose meta.json is corrupt or gone)."""
        st = self.st
        self._tidy()
        self._canonize()
        nsegs, readings, used, last = self._count()
        meta = self._load_meta()
        e = self._load_epoch()
        self.epoch = epoch
        if e:
            self.epoch = e
        else:
            if e == "" or (meta and meta["v"] >= META_V):
                # wipe: segments, then meta (a power cut in between still finds meta v2
                # without an epoch, and the next boot finishes the job); then the new epoch
                self._wipe()
                st.remove("meta.json")
                self.notice = "epoch file %s: new epoch %s, %d flash segments discarded" % (
                    "corrupt" if e == "" else "lost", epoch, nsegs)
                nsegs = readings = used = last = 0
                meta = None
            try:
                st.put("epoch", epoch)
            except OSError as x:
                # Nothing can be kept on this flash (full of other files): run from RAM,
                # which makes every boot a new epoch, so a power cut never reuses a seq the
                # server has. The flash is tried again at the next boot.
                self.kept = False
                self.notice = "cannot write the epoch file (%s): outbox in RAM only, a " \
                    "new epoch every boot" % x
                return
        self.segs.adopt(nsegs, readings, used)
        boot = 1
        dropped = 0
        nxt = 1
        sent = None
        if meta:
            boot = meta["boot"] + 1
            dropped = meta["dropped"]
            self.acked = meta["acked"]
            self.gaps = meta["gaps"]
            nxt = max(meta["mark"], last + 1)
            self._declare_holes()
            # Everything between what is safe (on flash, acked or already declared) and the
            # mark may have been produced and lost with RAM: an upper bound, per the
            # protocol.
            lo = max(last, self.acked)
            for g in self.gaps:
                lo = max(lo, g[1])
            self._uncovered(lo + 1, nxt - 1)
            # Nothing above the sent mark was ever sent (without one, from older firmware,
            # everything may have been).
            sent = meta.get("sent")
        elif e and (meta is not None or nsegs):
            nxt = self._lost_mark(last, meta is None, nsegs)
        elif nsegs:  # firmware before epochs, meta lost but data present: continue above
            nxt = last + 1
        if self.acked:
            self.segs.forget(self.acked)
        self.state = (boot, dropped, self.acked, self.gaps, nxt, sent)

    def _lost_mark(self, last, gone, nsegs):
        """The epoch file is there but meta.json is unusable (or gone while segments exist:
        they are only written after it). The epoch and the segments are kept; what
        meta.json knew is not: the seq mark, the ack, the pending gaps, the dropped count
        and the boot count. So: continue far above the newest seq on flash, declare the
        skipped seqs and every seq below it that no segment holds as `gap reboot` (some may
        be stored on the server already: harmless, an upper bound), and say so."""
        nxt = last + _LOST_MARK_SKIP + 1
        # seqs missing inside segments (readings dropped from RAM before the spill: their
        # gaps were in meta.json); a segment that does not read is declared when loaded
        for a, b, c, _ in self._ordered():
            if c != b - a + 1:
                try:
                    prev = a - 1
                    for q in index(self.st, name(a, b, c))[0]:
                        if q > prev + 1:
                            self._uncovered(prev + 1, q - 1)
                        prev = q
                    if prev < b:
                        self._uncovered(prev + 1, b)
                except (OSError, ValueError):
                    pass
        self._declare_holes()
        self._uncovered(last + 1, nxt - 1)
        self.notice = "meta.json %s: epoch %s and %d flash segments kept, seqs %d-%d " \
            "declared gap reboot, boot and dropped counts restart" % (
                "lost" if gone else "corrupt", self.epoch, nsegs, last + 1, nxt - 1)
        return nxt

    def _declare_holes(self):
        """Seqs above the ack that lie between flash segments (or below the first) and in
        no declared gap: segments dropped after meta was last saved (drops are persisted
        with the seq mark, not per dropped segment: flash wear). Declared as `reboot` (may
        have been produced and lost), or the server's ack could never pass them. A segment
        wholly acked or declared (its removal after a drop failed) is removed now and not
        counted; if it will not go, flash.Segments skips it when it is loaded or dropped."""
        cur = self.acked
        for a, b, c, size in self._ordered():
            if declared(self.acked, self.gaps, a, b) and self.st.remove(name(a, b, c)):
                self.segs.discard(c, size)
            if a > cur + 1:
                self._uncovered(cur + 1, a - 1)
            if b > cur:
                cur = b

    def _uncovered(self, a, b):
        """Declare a..b as `reboot` where no gap covers it yet."""
        gs = self.gaps
        for g in sorted(gs):
            if g[1] < a or g[0] > b:
                continue
            if g[0] > a:
                gs.append([a, g[0] - 1, "reboot", False])
            a = max(a, g[1] + 1)
        if a <= b:
            gs.append([a, b, "reboot", False])
        gs.sort()

    def _ordered(self):
        """(first, last, count, bytes) of every segment, the oldest first, _BATCH of them
        listed at a time (a backlog of hundreds is walked without a table of them all)."""
        lo = 0
        while True:
            w = scan(self.st, lo, _BATCH)
            k = len(w)
            for j in range(0, k, 4):
                yield w[j], w[j + 1], w[j + 2], w[j + 3]
            if k < 4 * _BATCH:
                return
            lo = w[k - 3] + 1

    def _tidy(self):
        """Remove what a power cut mid-write left (*.tmp), except a
        whole meta.json.tmp without meta.json: a cut between put's remove and rename (FAT).
        Keep it, or the numbering would restart below seqs already used. A tmp cut
        mid-write does not parse and is dropped."""
        st = self.st
        tmps = [n for n, _ in st.entries() if n[-4:] == ".tmp"]  # (few: one write at a time)
        for n in tmps:
            if n == "meta.json.tmp" and not self._exists("meta.json"):
                try:
                    with st.file(n) as f:
                        json.loads(f.read())
                    st.rename(n, "meta.json")
                    continue
                except (OSError, ValueError):
                    pass
            st.remove(n)

    def _exists(self, n):
        try:
            with self.st.file(n):
                return True
        except OSError:
            return False

    def _wipe(self):
        """Remove every file but the epoch and meta.json: a few names at a time (the
        directory may hold hundreds of segments), each batch listed whole before any
        removal."""
        st = self.st
        last = None
        while True:
            batch = []  # type: list[str]
            for n, _ in st.entries():
                if n != "epoch" and n != "meta.json" and len(batch) < 32:
                    batch.append(n)
            if not batch or batch == last:  # (== last: they did not go; nothing more to do)
                return
            for n in batch:
                st.remove(n)
            last = batch

    def _canonize(self):
        """Segment files whose names are not as flash.name makes them (zero-padded) are
        renamed to it: only those names are found again. A few at a time, each batch listed
        whole before anything is renamed."""
        st = self.st
        last = None
        while True:
            batch = []  # type: list[tuple[str, str]]
            for n, _ in st.entries():
                if len(batch) < 32 and n[:1] == "s" and n[-4:] != ".tmp" and parse(n) is None:
                    f = n[1:].split("_")
                    try:
                        if len(f) == 3:
                            batch.append((n, name(int(f[0]), int(f[1]), int(f[2]))))
                    except ValueError:
                        pass
            if not batch or batch == last:
                return
            for n, canon in batch:
                try:
                    st.rename(n, canon)
                except OSError:
                    pass
            last = batch

    def _count(self):
        """(segments, readings in them, their bytes, the newest seq in them)."""
        segs = readings = used = last = 0
        st = self.st
        for n, size in st.entries():
            s = parse(n)
            if s is None:
                continue
            segs += 1
            readings += s[2]
            used += st.size(n) if size is None else size
            if s[1] > last:
                last = s[1]
        return segs, readings, used, last

    def _load_meta(self):
        """meta.json as a dict with every key checked (gaps as [from, to, why, False]);
        None if there is no meta.json; "" if it is there but does not parse or holds
        something else."""
        try:
            with self.st.file("meta.json") as f:
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

    def _load_epoch(self):
        """The epoch text; None if there is no epoch file; "" if it is there but unreadable
        or not an epoch (1-16 chars of [0-9a-f], the protocol's limits)."""
        try:
            with self.st.file("epoch") as f:
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
