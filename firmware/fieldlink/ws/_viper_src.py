"""The source text of the viper functions that _viper.py compiles on the board at import.

Only text, and dropped once compiled: a loaded .mpy module keeps every string constant it
holds in the heap, so this text would otherwise stay resident (~8 KiB) next to the machine code
made from it. The comments below are part of the text, and as transient as the rest of it.
"""

# The byte loops: frames.py's encoder (frame_into, str_nbytes) and utf8.py's check.
# _KEYS: masking keys per random pool; the pool's byte 4*_KEYS is the next index.
LOOPS = """
_KEYS = const(64)


@micropython.viper
def str_nbytes(s: ptr8, nchars: int) -> int:
    # Byte length of a str's UTF-8 data without encoding it: walk nchars code points.
    # MicroPython stores str as valid UTF-8, so the lead byte gives each length.
    p = 0
    c = 0
    while c < nchars:
        b = s[p]
        if b < 0x80:
            p += 1
        elif b < 0xE0:
            p += 2
        elif b < 0xF0:
            p += 3
        else:
            p += 4
        c += 1
    return p


@micropython.viper
def utf8_check(state: int, buf: ptr8, n: int) -> int:
    if state < 0:
        return -1
    need = state >> 16
    lo = (state >> 8) & 0xFF
    hi = state & 0xFF
    i = 0
    while i < n:
        b = buf[i]
        i += 1
        if need:
            if b < lo or b > hi:
                return -1
            need -= 1
            lo = 0x80
            hi = 0xBF
        elif b < 0x80:
            pass
        elif b < 0xC2:
            return -1
        elif b < 0xE0:
            need = 1
            lo = 0x80
            hi = 0xBF
        elif b < 0xF0:
            need = 2
            lo = 0xA0 if b == 0xE0 else 0x80
            hi = 0x9F if b == 0xED else 0xBF
        elif b < 0xF5:
            need = 3
            lo = 0x90 if b == 0xF0 else 0x80
            hi = 0x8F if b == 0xF4 else 0xBF
        else:
            return -1
    if need:
        return (need << 16) | (lo << 8) | hi
    return 0


@micropython.viper
def frame_into(dst: ptr8, hdr: int, src: ptr8, pool: ptr8) -> int:
    # One masked client frame (RFC 6455 §5.2) into dst: header, the pool's next key, payload.
    # hdr = count << 6 | is_str << 5 | not_fin << 4 | opcode. For a str, count is its length
    # in characters and its UTF-8 bytes are counted here (the caller made sure 4 * count bytes
    # fit); otherwise count is the payload's length. Returns the frame's length, or 0 when the
    # key pool is used up. Native code: the call allocates nothing, whatever the payload size.
    if pool[_KEYS * 4] >= _KEYS:
        return 0  # no key left: the caller refills the pool and calls again
    n = hdr >> 6
    if hdr & 0x20:
        nch = n
        n = 0
        c = 0
        while c < nch:
            b = src[n]
            if b < 0x80:
                n += 1
            elif b < 0xE0:
                n += 2
            elif b < 0xF0:
                n += 3
            else:
                n += 4
            c += 1
    dst[0] = (0 if hdr & 0x10 else 0x80) | (hdr & 0x0F)
    p = 2
    if n < 126:
        dst[1] = 0x80 | n
    elif n < 65536:
        dst[1] = 0xFE
        dst[2] = n >> 8
        dst[3] = n & 0xFF
        p = 4
    else:
        dst[1] = 0xFF
        dst[2] = 0
        dst[3] = 0
        dst[4] = 0
        dst[5] = 0
        dst[6] = (n >> 24) & 0xFF
        dst[7] = (n >> 16) & 0xFF
        dst[8] = (n >> 8) & 0xFF
        dst[9] = n & 0xFF
        p = 10
    i = pool[_KEYS * 4]
    pool[_KEYS * 4] = i + 1
    k = ptr8(int(pool) + i * 4)
    d = ptr8(int(dst) + p)
    k0 = k[0]
    k1 = k[1]
    k2 = k[2]
    k3 = k[3]
    d[0] = k0
    d[1] = k1
    d[2] = k2
    d[3] = k3
    d = ptr8(int(d) + 4)
    j = 0
    n4 = n - (n & 3)
    while j < n4:
        d[j] = src[j] ^ k0
        d[j + 1] = src[j + 1] ^ k1
        d[j + 2] = src[j + 2] ^ k2
        d[j + 3] = src[j + 3] ^ k3
        j += 4
    while j < n:
        d[j] = src[j] ^ k[j & 3]
        j += 1
    return p + 4 + n
"""

# WebSocket.send (client.py) on MicroPython: one viper function for short text. If it cannot
# be compiled, the general send() of client.py serves. Its globals (_viper.py's namespace):
# _type, _str, _len (builtins found without the builtins-table search) and _READY (the
# exhausted iterator that `await` takes as "already done").
SEND = """
_FAST_MAX = const(496)
_KEYS = const(64)    # the Encoder's key pool: 64 keys, then the 'keys used' byte
_KEYS4 = const(256)

@micropython.viper
def send(self, data):
    # Hot path: a str of up to _FAST_MAX bytes while the connection is open and
    # nothing is queued (self._fast is then the key pool). Everything (UTF-8 byte
    # count, header, key, masking, the socket write) happens here: on MicroPython a
    # call level or an attribute lookup costs as much as masking 100 bytes, and viper
    # keeps the integer work in machine words (no int objects, no allocation).
    pool = self._fast
    nch = 0
    if pool and _type(data) is _str:
        nch = int(_len(data))
    if nch and nch <= _FAST_MAX:  # (an empty str takes the general path)
        s = ptr8(data)
        # §5.2 payload length = UTF-8 bytes of the str, read in place (MicroPython
        # stores str as UTF-8). ASCII goes a word at a time when the data is aligned.
        n = 0
        c = 0
        if not (int(s) & 3):
            sw = ptr32(s)
            while nch - c >= 4 and not ((sw[n >> 2] >> 7) & 0x01010101):
                n += 4
                c += 4
        while c < nch:
            b = s[n]
            if b < 0x80:
                n += 1
            elif b < 0xE0:
                n += 2
            elif b < 0xF0:
                n += 3
            else:
                n += 4
            c += 1
        bo = self._fbuf
        buf = ptr8(bo)
        # (a bytearray's data is heap-allocated, so word-aligned; checked because
        # word stores must be aligned on the ESP32)
        if n <= _FAST_MAX and not (int(buf) & 3):
            # The payload starts at buf[16] (word-aligned); key and header go right
            # before it, so the frame is buf[off:16 + n].
            if n < 126:
                off = 10
                buf[11] = 0x80 | n
            else:
                off = 8
                buf[9] = 0xFE
                buf[10] = n >> 8
                buf[11] = n & 0xFF
            buf[off] = 0x81  # FIN, text
            # §5.3: a fresh key per frame, from the os.urandom pool (see frames.py)
            kp = ptr8(pool)
            i = kp[_KEYS4]
            if i >= _KEYS:
                self._p.enc._refill()
                i = 0
            kp[_KEYS4] = i + 1
            k = ptr32(int(kp) + (i << 2))[0]
            kw = ptr32(int(buf) + 12)
            kw[0] = k
            kb = ptr8(int(buf) + 12)
            d = ptr8(int(buf) + 16)
            j = 0
            if not (int(s) & 3):
                dw = ptr32(int(buf) + 16)
                sw = ptr32(s)
                nw = n >> 2
                while j < nw:
                    dw[j] = sw[j] ^ k
                    j += 1
                j = nw << 2
            while j < n:
                d[j] = s[j] ^ kb[j & 3]
                j += 1
            tot = n + 16 - off
            try:
                w = self._sock.write(bo, off, tot)
            except OSError:
                raise self._lost("send failed")
            if w and int(w) == tot:
                return _READY
            return self._short(bo, w, off, tot)
    return self._send(data)
"""
