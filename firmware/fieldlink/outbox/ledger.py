"""The outbox's ledger: the numbering and what the server knows of it (next seq, the ack,
readings in flight, the seq and sent marks, pending gaps, the dropped count). Pure: no I/O;
the Outbox persists what meta() hands it and reports back with saved()."""

META_V = 2  # meta v2: an epoch file was written with this state (v1: before epochs)


class Ledger:
    """`gaps` are [from, to, why, sent_on_this_connection]."""

    def __init__(self, boot, dropped, acked, gaps, next_seq, sent, block):
        """The state boot recovery found on flash (a fresh one: 1, 0, 0, [], 1, None, 0).
        `sent`: the stored sent mark (None: unknown, so everything handed out may be on
        the server); `block`: how far ahead of next_seq the seq mark is saved."""
        self.next_seq = next_seq
        self.boot = boot
        self.dropped = dropped   # cumulative since first boot
        self.acked = acked       # highest cumulative ack seen
        self.gaps = gaps         # type: list
        self.inflight = 0        # the first N readings of the queue are sent, not acked
        # Seqs below this may have been handed out: persisted a block ahead, so a power cut
        # never reuses a seq (the ones between the last stored and it become a `gap reboot`).
        self.mark = next_seq + block
        # No seq above this was ever sent: persisted before a batch goes past it, a block
        # ahead (one flash write per block of readings sent), so that after a power cut the
        # outbox still knows which flash segments the server cannot hold.
        if sent is None:
            sent = next_seq - 1
        self.sent_mark = sent
        # Highest seq that may be stored on the server without being acked yet (sent on this
        # or an earlier connection). Readings <= this are never dropped: the server may hold
        # them, and a `gap dropped` over them would make the dropped count inexact.
        self.sent_hi = max(min(sent, next_seq - 1), acked)
        self.dirty = False   # the last write of meta() failed: send nothing past it

    # ---- numbering ----

    def take(self, seq):
        """seq is handed out (pushed, kept or not). True if the seq mark must be moved
        ahead (and saved) before going on."""
        self.next_seq = seq + 1
        return self.next_seq > self.mark or self.dirty

    def set_mark(self, q):
        """No seq >= q was handed out: what the Outbox saves next."""
        self.mark = q

    def sent_due(self, q, block):
        """Before a batch up to seq q goes: False if the sent mark covers it already, else
        the mark is moved a block ahead (the caller saves it)."""
        if q <= self.sent_mark:
            return False
        self.sent_mark = q + block
        return True

    def sending(self, q, inflight):
        """A batch up to seq q goes: the first `inflight` readings are in flight."""
        self.inflight = inflight
        if q > self.sent_hi:
            self.sent_hi = q

    def land(self, k):
        """k readings in flight left the queue (acked, or dropped from under the cursor)."""
        self.inflight = self.inflight - k if self.inflight > k else 0

    # ---- persistence ----

    def meta(self):
        """What meta.json holds."""
        self.merge_gaps(False)
        return {"v": META_V, "boot": self.boot, "mark": self.mark, "dropped": self.dropped,
                "acked": self.acked, "sent": self.sent_mark,
                "gaps": [g[:3] for g in self.gaps]}

    def saved(self, ok):
        self.dirty = not ok

    # ---- gaps ----

    def add_gap(self, frm, to, why):
        gs = self.gaps
        g = gs[-1] if gs else None
        if g is not None and not g[3] and g[2] == why and g[1] + 1 == frm:
            g[1] = to
        else:
            gs.append([frm, to, why, False])  # (first: a MemoryError here counts nothing)
        if why == "dropped":
            self.dropped += to - frm + 1

    def merge_gaps(self, resend):
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

    # ---- the link ----

    def on_connect(self):
        """A new connection: nothing is in flight, every pending gap must be sent again."""
        self.inflight = 0
        for g in self.gaps:
            g[3] = False
        self.merge_gaps(True)

    def take_gaps(self):
        """Gaps not yet sent on this connection, as [(from, to, why)]; marks them sent."""
        out = []  # type: list[tuple[int, int, str]]
        for g in self.gaps:
            if not g[3]:
                g[3] = True
                out.append((g[0], g[1], g[2]))
        return out

    def ack(self, n, welcome):
        """Cumulative ack: every seq <= n is stored (or declared) on the server; with
        `welcome` (the ack in a welcome) it holds nothing above n either (it stores in
        order). True if the server knows seqs this device no longer remembers (flash
        wiped): the numbering continues above them (or new readings would be ignored as
        duplicates)."""
        if n > self.acked:
            self.acked = n
        if welcome:
            self.sent_hi = self.acked
        gs = self.gaps
        k = 0
        while k < len(gs):
            if gs[k][1] <= n:
                gs.pop(k)
            else:
                k += 1
        if n >= self.next_seq:
            self.next_seq = n + 1
            return True
        return False
