"""Viper (native machine code) versions of the WebSocket client's byte loops, for MicroPython.

The viper source is a string compiled on the board at import: viper code in a .py file makes
mpy-cross demand a target architecture, and a .mpy holding machine code runs on one
architecture only. This way every firmware file compiles with plain `mpy-cross` (or freezes)
into portable bytecode, and the board's own compiler emits code for its own CPU. Importing
this fails (ImportError) on CPython, on a port without the viper emitter or the compiler, or
when compiling runs out of memory; mask.py and utf8.py then use their pure-Python versions.
"""
try:
    import micropython
except ImportError:
    raise ImportError("viper needs MicroPython")

# _KEYS: masking keys per random pool; the pool's byte 4*_KEYS is the next index.
_SRC = """
_KEYS = const(64)


@micropython.viper
def mask_copy(dst: ptr8, off: int, src: ptr8, n: int):
    k = ptr8(int(dst) + off - 4)
    d = ptr8(int(dst) + off)
    k0 = k[0]
    k1 = k[1]
    k2 = k[2]
    k3 = k[3]
    i = 0
    n4 = n - (n & 3)
    while i < n4:
        d[i] = src[i] ^ k0
        d[i + 1] = src[i + 1] ^ k1
        d[i + 2] = src[i + 2] ^ k2
        d[i + 3] = src[i + 3] ^ k3
        i += 4
    while i < n:
        d[i] = src[i] ^ k[i & 3]
        i += 1

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


def _compile():
    ns = {"micropython": micropython, "const": micropython.const}
    try:
        exec(_SRC, ns)
    except (SyntaxError, MemoryError, NotImplementedError) as e:
        raise ImportError("viper: %s" % e)
    return ns["mask_copy"], ns["str_nbytes"], ns["utf8_check"], ns["frame_into"]


mask_copy, str_nbytes, utf8_check, frame_into = _compile()
del _SRC, _compile  # the source and the compiler's garbage are not kept
