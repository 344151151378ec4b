"""Client-to-server masking (RFC 6455 §5.3) fused with the copy into the frame buffer.

`mask_copy(dst, off, src, n)` XORs n bytes of src with the 4-byte key stored at
dst[off-4:off] and writes them to dst[off:off+n]. On MicroPython it is a viper loop (no
allocation at all; src may be a str, whose UTF-8 bytes are read in place); elsewhere a
pure-Python version that allocates per frame, never per byte.
"""

try:
    import micropython

    _viper = micropython.viper
except (ImportError, AttributeError):
    _viper = None


if _viper:
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

    def text_payload(s):
        """(buffer, nbytes) for a str without allocating: viper reads the str in place."""
        return s, str_nbytes(s, len(s))

else:
    def mask_copy(dst, off, src, n):
        key = bytes(dst[off - 4:off])
        whole = (key * (n // 4 + 1))[:n]
        x = int.from_bytes(bytes(src[:n]), "little") ^ int.from_bytes(whole, "little")
        dst[off:off + n] = x.to_bytes(n, "little")

    def text_payload(s):
        b = s.encode("utf-8")
        return b, len(b)
