"""Firmware updates over the link, the collector's side (docs/ota.md): bundles uploaded by an
admin (`fieldlink ota push`, the /admin socket), offers to devices, chunk serving, and each
device's OTA state recorded in the store (table `ota`).

The collector never holds the signing key: the operator's tool signs the manifest, the
device checks the signature with the key it was provisioned with; the collector only checks
that the files it serves are the ones the manifest names (their SHA-256), so it cannot serve
something the device would refuse at the end.

Bundles are kept in memory (bounded); a collector restart forgets pending offers, which are
then pushed again (the device resumes from what it already has on flash: same offer id).
"""
import base64
import hashlib
import logging
import re
import time

from . import messages as M

log = logging.getLogger("fieldlink.collector.ota")

MAX_BUNDLE = 4 * 1024 * 1024      # bytes of files per bundle (ota.MAX_SIZE on the device)
MAX_BUNDLES = 8                   # kept at once; the oldest with no pending offer goes first
MAX_UPLOADS = 2                   # uploads in progress at once
UNANSWERED = 3                    # offers in a row a device left unanswered: given up
CHUNK_MAX = 4096                  # the most one ota_get may ask for (the device asks 2048)
STATES = ("offered", "accepted", "refused", "receiving", "staged", "trial", "confirmed",
          "rolled_back")
FINAL = ("refused", "confirmed", "rolled_back")
_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,31}$")


class OtaError(ValueError):
    """A bad admin request (shown to the admin)."""


def chunk_message(index, off, data):
    """A binary chunk: 4-byte big-endian file index, 4-byte offset, the data."""
    return index.to_bytes(4, "big") + off.to_bytes(4, "big") + data


def _check_manifest(m):
    if not isinstance(m, dict):
        raise OtaError("manifest: an object")
    for k in ("id", "version"):
        if not isinstance(m.get(k), str) or not _NAME.match(m[k]):
            raise OtaError("manifest %s: 1-32 of A-Za-z0-9._- (not starting with .)" % k)
    files = m.get("files")
    if not isinstance(files, list) or not files:
        raise OtaError("manifest files: a non-empty list")
    for f in files:
        if not isinstance(f, dict) or not isinstance(f.get("path"), str) \
                or not isinstance(f.get("size"), int) or not isinstance(f.get("sha256"), str):
            raise OtaError("manifest files: {path, size, sha256}")
    if not isinstance(m.get("sig"), str):
        raise OtaError("manifest sig: the signature (fieldlink ota push signs it)")
    if m.get("size") != sum(f["size"] for f in files) or m["size"] > MAX_BUNDLE:
        raise OtaError("manifest size: the files' sum, at most %d" % MAX_BUNDLE)


class Bundle:
    def __init__(self, manifest, data):
        self.manifest = manifest
        self.id = manifest["id"]
        self.version = manifest["version"]
        self.data = data                    # [bytes] in the manifest's order
        self.offer = M.dumps(dict(manifest, t="ota"))
        self.created = time.time()


class Ota:
    """Bundles, offers and the devices' states. The server calls on_hello() after each
    welcome and on_message() for ota_get / ota_status; the /admin socket calls upload(),
    push() and state()."""

    def __init__(self, collector):
        self.c = collector
        self.bundles = {}      # offer id -> Bundle
        self.uploads = {}      # offer id -> {path: bytearray}
        self.pending = {}      # device -> [offer id, state]
        self.unanswered = {}   # device -> offers sent with no ota_get/ota_status since

    # -- admin ---------------------------------------------------------------------------

    def upload(self, oid, path, data_b64, append=False):
        """One file (or the next piece of it, append) of a bundle being uploaded."""
        if not isinstance(oid, str) or not _NAME.match(oid) or not isinstance(path, str):
            raise OtaError("upload: id and path")
        try:
            data = base64.b64decode(data_b64, validate=True)
        except (TypeError, ValueError):
            raise OtaError("upload: data must be base64")
        up = self.uploads.get(oid)
        if up is None:
            if len(self.uploads) >= MAX_UPLOADS:
                self.uploads.pop(next(iter(self.uploads)))   # the oldest unfinished one
            up = self.uploads[oid] = {}
        if sum(len(v) for v in up.values()) + len(data) > MAX_BUNDLE:
            del self.uploads[oid]
            raise OtaError("upload: bundle larger than %d B" % MAX_BUNDLE)
        if append and path in up:
            up[path] += data
        else:
            up[path] = bytearray(data)
        return {"ok": True, "have": len(up[path])}

    async def push(self, manifest, devices=None, all_devices=False):
        """Offer the uploaded bundle `manifest` names to devices (ids, or every known one)."""
        _check_manifest(manifest)
        oid = manifest["id"]
        b = self.bundles.get(oid)
        if b is None:
            up = self.uploads.pop(oid, None) or {}
            data = []
            for f in manifest["files"]:
                d = up.get(f["path"])
                if d is None or len(d) != f["size"] or \
                        hashlib.sha256(d).hexdigest() != f["sha256"]:
                    raise OtaError("file %s: not uploaded, or not the size and SHA-256 the "
                                   "manifest names" % f["path"])
                data.append(bytes(d))
            b = Bundle(manifest, data)
            self._keep(b)
        if all_devices:
            devices = sorted(self.c.devices.tokens)
        if not isinstance(devices, list) or not devices or \
                not all(isinstance(d, str) and M.DEVICE_ID.match(d) for d in devices):
            raise OtaError("devices: a list of device ids (or all)")
        offered = []
        for dev in devices:
            self.pending[dev] = [oid, "offered"]
            await self._record(dev, b, "offered", None)
            s = self.c._live.get(dev)
            if s is not None and s.hello is not None:
                await self._send_offer(s, b)
                offered.append(dev)
        return {"ok": True, "id": oid, "version": b.version, "devices": devices,
                "sent_now": offered}

    def _keep(self, b):
        self.bundles[b.id] = b
        busy = {p[0] for p in self.pending.values() if p[1] not in FINAL}
        for oid in sorted(self.bundles, key=lambda k: self.bundles[k].created):
            if len(self.bundles) <= MAX_BUNDLES:
                break
            if oid not in busy and oid != b.id:
                del self.bundles[oid]

    async def state(self, device):
        rows = await self.c._db(self.c.store.ota_history, device)
        p = self.pending.get(device)
        return {"ok": True, "pending": p, "history": rows}

    # -- devices -------------------------------------------------------------------------

    async def on_hello(self, s):
        """After the welcome: offer again what is pending and not yet staged (a reconnect or a
        reboot resumes it), unless the device already runs that version."""
        p = self.pending.get(s.dev)
        if p is None or p[1] not in ("offered", "accepted", "receiving"):
            return
        b = self.bundles.get(p[0])
        if b is None or s.hello.get("fw") == b.version:
            return
        if self.unanswered.get(s.dev, 0) >= UNANSWERED:
            # The connection ended after each offer with no answer (a device with too
            # little heap for the offer's text loses its link to it): offering it again
            # would keep knocking it off.
            why = "no answer to %d offers in a row (no heap for the offer?)" % UNANSWERED
            log.warning("%s: firmware %s: %s; given up", s.dev, b.version, why)
            del self.pending[s.dev]
            self.unanswered.pop(s.dev, None)
            await self._record(s.dev, b, "refused", why)
            return
        await self._send_offer(s, b)

    async def _send_offer(self, s, b):
        self.unanswered[s.dev] = self.unanswered.get(s.dev, 0) + 1
        log.info("%s: offering firmware %s (offer %s, %d B)", s.dev, b.version, b.id,
                 b.manifest["size"])
        await s.ws.send(b.offer)

    async def on_message(self, s, m):
        t = m["t"]
        oid = m.get("id")
        p = self.pending.get(s.dev)
        self.unanswered.pop(s.dev, None)
        if t == "ota_get":
            i, off, n = m.get("file"), m.get("off"), m.get("len")
            b = self.bundles.get(oid) if p is not None and p[0] == oid else None
            if b is None:
                raise M.ProtocolError(M.POLICY, "ota", "ota_get for an offer not pending")
            if not all(isinstance(x, int) and not isinstance(x, bool) for x in (i, off, n)) \
                    or not 0 <= i < len(b.data) or not 0 <= off <= len(b.data[i]) \
                    or not 0 < n <= CHUNK_MAX:
                raise M.ProtocolError(M.INVALID_DATA, "ota", "ota_get: file, off, len out of range")
            if p[1] != "receiving":
                p[1] = "receiving"
                await self._record(s.dev, b, "receiving", None)
            await s.ws.send(chunk_message(i, off, b.data[i][off:off + n]))
            return
        # ota_status
        state, reason, ver = m.get("state"), m.get("reason"), m.get("version")
        if state not in STATES or not isinstance(oid, str) or len(oid) > 32 \
                or not isinstance(reason, (str, type(None))) or not isinstance(ver, str):
            raise M.ProtocolError(M.INVALID_DATA, "ota", "ota_status: id, state, version, reason")
        reason = M.printable(reason[:200]) if reason else None
        log.log(logging.WARNING if state in ("refused", "rolled_back") else logging.INFO,
                "%s: firmware %s (offer %s) %s%s", s.dev, M.printable(ver[:32]),
                M.printable(oid), state, ": " + reason if reason else "")
        await self.c._db(self.c.store.record_ota, s.dev, oid, ver[:32], state, reason)
        if p is not None and p[0] == oid:
            p[1] = state
            if state in FINAL:
                del self.pending[s.dev]
        self.c._publish({"t": "ota", "dev": s.dev, "id": oid, "version": ver[:32],
                         "state": state, "reason": reason, "time": time.time()})

    async def _record(self, dev, b, state, reason):
        await self.c._db(self.c.store.record_ota, dev, b.id, b.version, state, reason)
        self.c._publish({"t": "ota", "dev": dev, "id": b.id, "version": b.version,
                         "state": state, "reason": reason, "time": time.time()})
