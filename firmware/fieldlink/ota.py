"""Firmware updates over the link, the pure core (docs/ota.md): the offer's checks (shape,
paths, sizes), its signature (HMAC-SHA256, RFC 2104, over the canonical manifest), the chunk
header and the transfer's bookkeeping. No os, no socket: tested on CPython and MicroPython
alike. Loaded (fieldlink.lazy) only while an update runs, with ota_flash.py (the flash side).
"""
import hashlib

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):  # type: ignore[misc]  # the stubs' const is generic
        return x

CHUNK = const(2048)        # bytes asked for per ota_get: never more than this in RAM
MAX_FILES = const(200)
MAX_SIZE = const(4 * 1024 * 1024)   # no bundle of a board's firmware comes near this
_NAME_OK = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"
_HEX = "0123456789abcdef"


class Refused(Exception):
    """The offer (or a chunk) cannot be taken: str(e) is the reason the server records."""


def _name(s, what, n=32):
    if not isinstance(s, str) or not 1 <= len(s) <= n or s[0] == ".":
        raise Refused("%s: 1-%d characters, not starting with '.'" % (what, n))
    for c in s:
        if c not in _NAME_OK:
            raise Refused("%s: only A-Za-z0-9._-" % what)
    return s


def _int(v, lo, hi, what):
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise Refused("%s: an integer %d-%d" % (what, lo, hi))
    return v


def check_offer(m):
    """The `ota` message's fields checked -> (id, version, size, files, sig): files a list of
    (path, size, sha256 hex). Paths are relative, under fieldlink/, made of plain names (no
    '..', no absolute path): a signed manifest still cannot write outside its directory."""
    oid = _name(m.get("id"), "id")
    ver = _name(m.get("version"), "version")
    fl = m.get("files")
    if not isinstance(fl, list) or not 1 <= len(fl) <= MAX_FILES:
        raise Refused("files: a list of 1-%d" % MAX_FILES)
    files = []
    total = 0
    seen = set()
    for f in fl:
        if not isinstance(f, dict):
            raise Refused("files: objects")
        p = f.get("path")
        if not isinstance(p, str) or len(p) > 96 or not p.startswith("fieldlink/"):
            raise Refused("file path: under fieldlink/, at most 96 characters")
        for part in p.split("/"):
            _name(part, "file path")
        if p in seen:
            raise Refused("file path twice: %s" % p)
        seen.add(p)
        n = _int(f.get("size"), 0, MAX_SIZE, "file size")
        h = f.get("sha256")
        if not isinstance(h, str) or len(h) != 64 or any(c not in _HEX for c in h):
            raise Refused("sha256: 64 lowercase hex digits")
        total += n
        files.append((p, n, h))
    if _int(m.get("size"), 0, MAX_SIZE, "size") != total:
        raise Refused("size %d is not the sum of the files' (%d)" % (m["size"], total))
    sig = m.get("sig")
    if not isinstance(sig, str) or len(sig) != 64:
        raise Refused("sig: 64 hex digits")
    return oid, ver, total, files, sig


def canonical(oid, ver, size, files):
    """The bytes the signature covers: one line each for the format, id, version and total
    size, then path, size and sha256 per file, in the manifest's order (no JSON: key order
    and number formats cannot differ between the signer and the board)."""
    out = ["fieldlink-ota-1", oid, ver, str(size)]
    for p, n, h in files:
        out.append("%s %d %s" % (p, n, h))
    return ("\n".join(out) + "\n").encode()


def hmac_sha256(key, msg):
    """RFC 2104 HMAC with SHA-256 (64-byte blocks); hashlib.sha256 is all MicroPython has."""
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key + b"\0" * (64 - len(key))
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
    inner.update(msg)
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
    outer.update(inner.digest())
    return outer.digest()


def hexof(b):
    return "".join("%02x" % x for x in b)


def sig_ok(key, oid, ver, size, files, sig):
    """The offer's signature is right for key (bytes). Compared in full, not stopping at the
    first difference (no timing hint)."""
    want = hexof(hmac_sha256(key, canonical(oid, ver, size, files)))
    d = 0
    for a, b in zip(want, sig.lower()):
        d |= ord(a) ^ ord(b)
    return d == 0 and len(sig) == len(want)


def sign(key, oid, ver, size, files):
    """The signature the operator's tool puts on an offer (`fieldlink ota push`)."""
    return hexof(hmac_sha256(key, canonical(oid, ver, size, files)))


def chunk_head(data):
    """A binary chunk message -> (file index, offset); the data follows at byte 8."""
    if len(data) < 8:
        raise Refused("chunk shorter than its header")
    return (int.from_bytes(data[0:4], "big"), int.from_bytes(data[4:8], "big"))


def chunk_message(index, off, data):
    """Server side: the binary message for a chunk."""
    return index.to_bytes(4, "big") + off.to_bytes(4, "big") + data


class Transfer:
    """Where the transfer stands: file `i`, byte `off` of it. Built from what is already on
    flash (have: each file's size there, in order), so a reboot resumes where it stopped."""

    def __init__(self, sizes, have):
        self.sizes = sizes
        i = 0
        while i < len(sizes) and i < len(have) and have[i] == sizes[i]:
            i += 1
        self.i = i
        self.off = have[i] if i < len(have) and i < len(sizes) else 0
        if i < len(sizes) and not 0 <= self.off <= sizes[i]:  # absent (-1), or too long
            self.off = 0  # longer than it should be: that file starts over
        self.asked = None  # type: tuple[int, int, int] | None

    def done(self):
        return self.i >= len(self.sizes)

    def want(self):
        """(file index, offset, length) of the next chunk to ask for (and mark it asked), or
        None when every file is complete. Empty files complete at once."""
        while not self.done() and self.off >= self.sizes[self.i]:
            self.i += 1
            self.off = 0
        if self.done():
            self.asked = None
            return None
        n = self.sizes[self.i] - self.off
        self.asked = (self.i, self.off, n if n < CHUNK else CHUNK)
        return self.asked

    def got(self, i, off, n):
        """A chunk arrived for (i, off) with n data bytes: it must be the one asked for."""
        a = self.asked
        if a is None or i != a[0] or off != a[1] or n != a[2]:
            raise Refused("chunk %d@%d (%d B) was not asked for" % (i, off, n))
        self.asked = None
        self.off += n
