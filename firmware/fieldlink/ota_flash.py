"""Firmware updates over the link, the flash side (docs/ota.md): staging the offered files in
fw/VERSION/ (resumable: what is on flash is the progress), the checks against the flash,
the one rename that switches (fw/trial), and at the next boots the trial's end: confirmed
(fw/current) or rolled back (fw/rolled, reported to the server). Loaded (fieldlink.lazy) only
while an update runs or a trial is settled; the pure checks are in ota.py.

Layout: fw/VERSION/fieldlink/... (a complete package, selected by boot.py), fw/VERSION/.ota
(the offer id: the progress file, with the files' sizes), fw/current (the confirmed version),
fw/trial ("VERSION ID" on trial; reasons appended when it fails), fw/tries (one byte per boot
on trial), fw/rolled (a failed trial, until the server was told).
"""
import gc
import json
import os

TYPE_CHECKING = False
if TYPE_CHECKING:  # mypy only: MicroPython has no typing module
    from typing import Any

from fieldlink import log
from fieldlink import ota as core

_log = log.Logger("ota")
_DIR = 0x4000
END = 1      # the update is over here (refused, failed): drop the session
REBOOT = 2   # staged and switched: reboot into it


def status(oid, state, version, reason=None):
    m = {"t": "ota_status", "id": oid, "state": state, "version": version}
    if reason:
        m["reason"] = reason[:200]
    return json.dumps(m)


def _exists(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False


def _size(p):
    try:
        return os.stat(p)[6]
    except OSError:
        return -1


def _read_line(p):
    try:
        with open(p) as f:
            return f.readline().strip()
    except OSError:
        return ""


def _write(p, text):
    # whole or absent: written beside, then one rename
    with open(p + ".tmp", "w") as f:
        f.write(text)
    os.rename(p + ".tmp", p)


def _remove(p):
    try:
        if os.stat(p)[0] & _DIR:
            for n in os.listdir(p):
                _remove(p + "/" + n)
            os.rmdir(p)
        else:
            os.remove(p)
    except OSError:
        pass


def _mkdirs(p):
    d = ""
    for part in p.split("/"):
        d = d + "/" + part if d else part
        try:
            os.mkdir(d)
        except OSError:
            pass


def current():
    return _read_line("fw/current")


def free_bytes():
    """(free bytes, block size) of the filesystem holding fw/."""
    st = os.statvfs("fw")
    return st[0] * st[4], st[0] or 4096


def file_sha256(p):
    import hashlib
    h = hashlib.sha256()
    buf = bytearray(512)
    with open(p, "rb") as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(buf if n == len(buf) else buf[:n])
    return core.hexof(h.digest())


class Session:
    """One update, from the offer to the switch. offer() and chunk() return (messages to
    send, None | END | REBOOT)."""

    def __init__(self, cfg, fw, base=0):
        self.cfg = cfg
        self.fw = fw          # the running version
        self.base = base      # live heap before the update (bytes), and its peak since
        self.peak = base
        self._n = 0
        self.oid = ""
        self.ver = ""
        self.files = []  # type: list
        self.tr = None  # type: Any

    def _probe(self):
        # the live heap (after a collection) every few chunks: `fieldlink bench ota`'s peak
        try:
            gc.collect()
            a = gc.mem_alloc()
        except AttributeError:  # CPython
            return
        if a > self.peak:
            self.peak = a

    def _refuse(self, oid, why, ver=None, wipe=False):
        _log.warn("update %s refused: %s", oid, why)
        v = ver or self.ver
        if wipe and v and v != current():  # what this offer staged (a resumed part too)
            _remove("fw/" + v)
        self.tr = None
        return [status(oid, "refused", ver or self.ver or "", why)], END

    def offer(self, m):
        oid = m.get("id") if isinstance(m.get("id"), str) else ""
        try:
            oid, ver, size, files, sig = core.check_offer(m)
        except core.Refused as e:
            return self._refuse(oid[:32], str(e))
        key = self.cfg.ota_key
        if not key:
            return self._refuse(oid, "no ota_key provisioned", ver)
        if not core.sig_ok(key.encode(), oid, ver, size, files, sig):
            return self._refuse(oid, "bad signature", ver)
        if ver == self.fw or ver == current():
            return self._refuse(oid, "already running %s" % ver, ver)
        if _exists("fw/trial"):
            return self._refuse(oid, "a firmware is on trial", ver)
        if self.tr is not None and self.oid == oid:
            return [self._get(self.tr.asked or self.tr.want())], None  # offered again
        _mkdirs("fw")
        d = "fw/" + ver
        if _read_line(d + "/.ota") != oid:
            # a new offer: what another one staged goes (one staging at a time)
            keep = current()
            for n in os.listdir("fw"):
                if os.stat("fw/" + n)[0] & _DIR and n != keep:
                    _remove("fw/" + n)
        have = [_size(d + "/" + p) for p, _, _ in files]
        free, bs = free_bytes()
        need = 4 * bs + self.cfg.outbox_flash_bytes
        for i in range(len(files)):
            left = files[i][1] - (have[i] if have[i] > 0 else 0)
            need += (left + bs - 1) // bs * bs
        if free < need:
            return self._refuse(oid, "too big: needs %d B of flash, %d free" % (need, free),
                                ver, wipe=True)
        if _read_line(d + "/.ota") != oid:
            _mkdirs(d)
            _write(d + "/.ota", oid + "\n")
        self.oid, self.ver, self.files = oid, ver, files
        self.tr = core.Transfer([f[1] for f in files], have)
        done = sum(have[i] for i in range(self.tr.i)) + self.tr.off
        _log.info("update %s to %s accepted: %d B, %d on flash", oid, ver, size, done)
        nxt = self.tr.want()
        out = [status(oid, "accepted", ver, "resume at %d B" % done if done else None)]
        if nxt is None:
            return self._finish(out)
        out.append(self._get(nxt))
        return out, None

    def _get(self, w):
        return json.dumps({"t": "ota_get", "id": self.oid, "file": w[0], "off": w[1],
                           "len": w[2]})

    def chunk(self, data):
        if self.tr is None:
            return [], END
        try:
            i, off = core.chunk_head(data)
            n = len(data) - 8
            self.tr.got(i, off, n)
        except core.Refused as e:
            return self._refuse(self.oid, str(e))
        self._n += 1
        if self._n % 8 == 0:
            self._probe()
        p = "fw/%s/%s" % (self.ver, self.files[i][0])
        if off == 0:
            _mkdirs(p.rsplit("/", 1)[0])
        with open(p, "ab" if off else "wb") as f:
            f.write(memoryview(data)[8:])
        nxt = self.tr.want()
        if nxt is not None:
            return [self._get(nxt)], None
        return self._finish([])

    def _finish(self, out):
        """Every file on flash: check each one's SHA-256 as stored, then switch (one rename of
        fw/trial) and reboot into it."""
        self._probe()
        d = "fw/" + self.ver
        for p, n, h in self.files:
            if _size(d + "/" + p) != n or file_sha256(d + "/" + p) != h:
                return self._refuse(self.oid, "sha256 mismatch: %s" % p, wipe=True)
        _remove("fw/tries")
        _write("fw/trial", "%s %s\n" % (self.ver, self.oid))
        _log.info("update %s staged: %s on trial after the reboot; live heap %d B before, "
                  "peak %d B (+%d)", self.oid, self.ver, self.base, self.peak,
                  self.peak - self.base)
        out.append(status(self.oid, "staged", self.ver))
        return out, REBOOT


# ---- the supervisor's steps (Supervisor.ota_step) ----

async def step(sup, what, arg):
    """One OTA step of the link (what: offer, chunk, welcome, ack, expired); sup.ota holds
    the Session while an update runs. With no session, arg is (arg, live heap before)."""
    s = sup.ota
    if s is None:
        arg, base = arg
        if what == "offer":
            s = sup.ota = Session(sup.cfg, sup.fw, base)
    if what == "offer" or what == "chunk":
        out, end = s.offer(arg) if what == "offer" else s.chunk(arg)
        for text in out:
            await sup._send(text)
        if end:
            sup.ota = None
            if end == REBOOT:  # switched: the new version runs after the reset
                await sup.reboot()
    elif what == "welcome":
        # "on trial", or the report of a trial rolled back (kept on flash until sent)
        if sup.trial:
            await sup._send(status(sup.trial, "trial", sup.fw))
        if sup.ota_notes:
            note = notes()
            if note:
                await sup._send(note)
            notes_sent()
            sup.ota_notes = False
    elif what == "ack":
        # a readings ack on trial: confirmed (no rollback from now on), and on trial only
        # until the server has been told
        text = confirm(sup.fw, sup.trial)
        sup.trial_until = None
        await sup._send(text)
        confirm_sent()
        sup.trial = None
    elif what == "expired":
        rollback("no connection with readings acked within %d s" % sup.cfg.ota_trial_s)
        sup.reset_now()


# ---- the trial's end (boot.py put the new version on sys.path) ----

def trial_of(fw):
    """The offer id when the running version `fw` is the one on trial, else None."""
    t = _read_line("fw/trial").split()
    return t[1] if len(t) > 1 and t[0] == fw else None


def confirm(fw, oid):
    """The trial connected and had readings acked: fw/current names it (one rename), the
    previous version's files go. fw/trial stays until the server was told (confirm_sent):
    after a power cut before that, the next boot is on trial again, confirms and tells."""
    _write("fw/current", fw + "\n")
    _remove("fw/tries")
    for n in os.listdir("fw"):
        if n != fw and os.stat("fw/" + n)[0] & _DIR:
            _remove("fw/" + n)
    _log.info("firmware %s confirmed", fw)
    return status(oid, "confirmed", fw)


def confirm_sent():
    _remove("fw/trial")
    _remove("fw/tries")


def rollback(why):
    """Give the trial up (this boot's firmware): the previous one runs after the reset."""
    with open("fw/trial", "a") as f:
        f.write("\n%s\n" % why)
    os.rename("fw/trial", "fw/rolled")
    _remove("fw/tries")
    _log.error("firmware on trial rolled back: %s", why)


def notes():
    """The report of a rolled-back trial for the server (fw/rolled), or None."""
    try:
        with open("fw/rolled") as f:
            lines = [ln.strip() for ln in f.read().split("\n") if ln.strip()]
    except OSError:
        return None
    t = lines[0].split() if lines else []
    if len(t) < 2:
        return None
    return status(t[1], "rolled_back", t[0], lines[-1] if len(lines) > 1 else "unknown")


def notes_sent():
    """The server was told: the failed version's files and the report go."""
    t = _read_line("fw/rolled").split()
    if t and t[0] != current():
        _remove("fw/" + t[0])
    _remove("fw/rolled")
    _remove("fw/tries")
