"""WebSocket framing (RFC 6455 §5.2): a client frame encoder that reuses one buffer and an
incremental decoder for server frames that accepts data split at any byte boundary.

Client-to-server masking (§5.3) is fused with the copy into the frame buffer: on MicroPython
in viper (_viper.frame_into: header, key and masked payload in one call, no allocation; a
str's UTF-8 bytes are read in place), elsewhere in Python (mask_copy, allocating per frame,
never per byte)."""

try:
    from micropython import const
except ImportError:  # CPython
    const = lambda x: x  # noqa: E731

from .errors import ProtocolError

TYPE_CHECKING = False
if TYPE_CHECKING:  # mypy only: MicroPython has no typing module
    from typing import Any

try:
    from ._viper import frame_into, str_nbytes
except ImportError:  # CPython, or no viper emitter: the Encoder builds frames in Python
    frame_into = str_nbytes = None  # type: ignore[assignment]

OP_CONT = const(0x0)
OP_TEXT = const(0x1)
OP_BINARY = const(0x2)
OP_CLOSE = const(0x8)
OP_PING = const(0x9)
OP_PONG = const(0xA)

_KEEP_MAX = const(2048)   # the send buffer grows up to this and stays; bigger frames are one-off
_KEYS = const(64)         # masking keys fetched at once: one os.urandom(256) per 64 frames
_IDX = const(4 * _KEYS)   # index of the pool's "keys used" byte
_VIPER_MAX = const(1 << 23)  # the viper path packs the length into a small int
_NOT_FIN = const(0x10)    # viper header flag: not the final fragment
_IS_STR = const(0x20)     # viper header flag: the payload is a str, count is in characters
_MAX_CONTROL = const(125)  # §5.5


class Encoder:
    """Builds masked client frames: header, key and payload in ONE buffer, so the shell writes
    each frame with a single write. After encode(), the frame is out[0:n]."""

    def __init__(self, randbytes, size=512):
        self.buf = bytearray(size)
        self.out = self.buf
        self._rand = randbytes
        # §5.3 / §10.3: a fresh, unpredictable key for every frame, drawn from os.urandom in
        # batches so that a frame costs no allocation. Byte 4*_KEYS counts the keys used.
        self._pool = bytearray(_IDX + 1)
        self._pool[_IDX] = _KEYS

    # The two methods below run once per message: few locals and a shallow
    # stack (MicroPython puts a bytecode frame of more than 11 slots on the heap).
    def encode(self, opcode, src, n):
        """Frame n bytes of buffer src as one final frame; return the frame's length."""
        if self._pool[_IDX] >= _KEYS:
            self._refill()
        if n + 14 > len(self.buf) or frame_into is None or n >= _VIPER_MAX:
            return self.encode_frame(opcode, src, n, True)
        self.out = self.buf
        # (viper takes any buffer, or a str, for a ptr8 argument; the stubs say ptr8 only)
        return frame_into(self.buf, (n << 6) | opcode, src, self._pool)  # type: ignore[arg-type]

    def encode_text(self, s):
        """Frame str s as one final text frame; return the frame's length."""
        if self._pool[_IDX] >= _KEYS:
            self._refill()
        if frame_into is None:  # no viper: frame the encoded bytes
            b = s.encode()
            return self.encode_frame(OP_TEXT, b, len(b), True)
        n = len(s)
        if 4 * n + 14 > len(self.buf) or n >= _VIPER_MAX:
            # (viper takes a str for a ptr8 argument: its UTF-8 bytes)
            n = str_nbytes(s, n)  # type: ignore[arg-type]
            if n >= _VIPER_MAX:  # framed in Python, which masks bytes, not a str
                s = s.encode()
            return self.encode_frame(OP_TEXT, s, n, True)
        # viper reads the str's UTF-8 in place (no encoded copy) and counts its bytes
        self.out = self.buf
        return frame_into(
            self.buf, (n << 6) | _IS_STR | OP_TEXT, s, self._pool)  # type: ignore[arg-type]

    def encode_frame(self, opcode, src, n, fin):
        """Any frame, fragments included (fin False); may allocate."""
        if self._pool[_IDX] >= _KEYS:
            self._refill()
        need = n + 14
        buf = self.buf
        if need > len(buf):
            if need <= _KEEP_MAX:
                buf = self.buf = bytearray(need + 64)  # grows and stays
            else:
                buf = bytearray(need)  # one-off: a big frame does not pin its buffer
        self.out = buf
        if frame_into is not None and n < _VIPER_MAX:
            hdr = (n << 6) | (0 if fin else _NOT_FIN) | opcode
            return frame_into(buf, hdr, src, self._pool)  # type: ignore[arg-type]
        return _encode_py(buf, opcode, src, n, fin, self._pool)

    def _refill(self):
        self._pool[0:_IDX] = self._rand(_IDX)
        self._pool[_IDX] = 0


def mask_copy(dst, off, src, n):
    """XOR n bytes of src with the 4-byte key at dst[off-4:off] into dst[off:off+n]."""
    key = bytes(dst[off - 4:off])
    whole = (key * (n // 4 + 1))[:n]
    x = int.from_bytes(bytes(src[:n]), "little") ^ int.from_bytes(whole, "little")
    dst[off:off + n] = x.to_bytes(n, "little")


def _encode_py(buf, opcode, src, n, fin, pool):
    # CPython, no viper, or a frame of 8 MiB or more
    buf[0] = (0x80 if fin else 0) | opcode
    # §5.2: the minimal number of bytes for the length; the mask bit is always set.
    if n < 126:
        buf[1] = 0x80 | n
        p = 2
    elif n < 0x10000:
        buf[1] = 0xFE
        buf[2] = n >> 8
        buf[3] = n & 0xFF
        p = 4
    else:
        buf[1] = 0xFF
        for i in range(8):
            buf[2 + i] = (n >> (56 - 8 * i)) & 0xFF
        p = 10
    k = pool[_IDX] * 4
    pool[_IDX] += 1
    buf[p:p + 4] = pool[k:k + 4]
    p += 4
    if n:
        mask_copy(buf, p, src, n)
    return p + n


class Decoder:
    """Incremental parser of server frames. feed(data, on_frame) calls
    on_frame(fin, opcode, payload) for every complete frame; payload is a memoryview that is
    valid only during the call. Frames wholly inside one chunk are parsed in place; a frame
    split across chunks is collected in one buffer sized from its header. Raises
    ProtocolError on §5.2/§5.5 violations, and on a data frame longer than `max_size` as soon
    as its header has arrived (1009), before any of its payload is buffered."""

    def __init__(self, max_size):
        self.max_size = max_size
        # the message limit a 1009 names; max_size is lowered to the room the fragments of a
        # message leave (Protocol), which is no limit the server could know
        self.limit = max_size
        self._buf = None   # an incomplete frame
        self._have = 0     # bytes of it in _buf
        self._want = 0     # its full size, or 0 while its header is incomplete
        self._size = 0     # set by _frame when it found a header but not the whole payload
        self.stopped = False  # set once the connection is closed: parse nothing more
        # on_part(opcode, payload bytes) for the payload of a frame that is still incomplete,
        # as it arrives (Protocol checks text there: a bad byte fails at once), or None
        self.on_part = None  # type: Any

    def stop(self):
        self.stopped = True
        self._buf = None

    def feed(self, data, on_frame):
        if self.stopped:
            return
        buf = self._buf
        if buf is not None:
            self._buf = None
            if not self._want:
                # Header still incomplete (< 14 bytes kept): rejoin and parse afresh.
                data = bytes(buf) + bytes(data)
            else:
                have = self._have
                k = min(len(data), self._want - have)
                src = memoryview(data)[:k]
                memoryview(buf)[have:have + k] = src
                have += k
                if have < self._want:
                    self._buf, self._have = buf, have
                    if buf[0] & 0x0F <= OP_TEXT and self.on_part is not None:
                        self.on_part(buf[0] & 0x0F, src)
                    return
                self._frame(memoryview(buf), 0, have, on_frame)
                if self.stopped:
                    return
                data = memoryview(data)[k:]
        mv = memoryview(data)
        end = len(mv)
        pos = 0
        while pos < end:
            self._size = 0
            nxt = self._frame(mv, pos, end, on_frame)
            if self.stopped:
                return
            if nxt < 0:
                # An incomplete frame: keep it, in a buffer of its full size once its header
                # is complete (_size), else as it is (rejoined with the next data).
                k = end - pos
                total = self._size
                if total:
                    buf = bytearray(total)
                    memoryview(buf)[:k] = mv[pos:end]
                else:
                    buf = bytearray(mv[pos:end])
                self._buf, self._have, self._want = buf, k, total
                op = mv[pos] & 0x0F
                if total and op <= OP_TEXT and self.on_part is not None:
                    n = mv[pos + 1] & 0x7F
                    h = pos + (4 if n == 126 else 10 if n == 127 else 2)
                    if h < end:
                        self.on_part(op, mv[h:end])
                return
            pos = nxt

    def _frame(self, mv, pos, end, on_frame):
        b0 = mv[pos]
        if b0 & 0x70:
            raise ProtocolError(1002, "RSV bits set without an extension")
        op = b0 & 0x0F
        if op > OP_BINARY and op < OP_CLOSE or op > OP_PONG:
            raise ProtocolError(1002, "unknown opcode %d" % op)
        fin = b0 & 0x80
        if op >= OP_CLOSE and not fin:
            raise ProtocolError(1002, "fragmented control frame")
        if end - pos < 2:
            return -1
        b1 = mv[pos + 1]
        if b1 & 0x80:
            raise ProtocolError(1002, "masked frame from server")  # §5.1
        n = b1 & 0x7F
        h = 2
        if op >= OP_CLOSE:
            if n > _MAX_CONTROL:
                raise ProtocolError(1002, "control frame over 125 bytes")
        elif n == 126:
            if end - pos < 4:
                return -1
            n = (mv[pos + 2] << 8) | mv[pos + 3]
            h = 4
        elif n == 127:
            if end - pos < 10:
                return -1
            if mv[pos + 2] & 0x80:
                raise ProtocolError(1002, "64-bit length with the top bit set")
            n = 0
            for i in range(8):
                n = (n << 8) | mv[pos + 2 + i]
            h = 10
        if op < OP_CLOSE and n > self.max_size:
            raise ProtocolError(1009, "message over %d bytes" % self.limit)
        stop = pos + h + n
        if stop > end:
            self._size = h + n
            return -1
        on_frame(fin, op, mv[pos + h:stop])
        return stop
