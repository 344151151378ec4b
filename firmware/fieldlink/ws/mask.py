"""Client-to-server masking (RFC 6455 §5.3) fused with the copy into the frame buffer.

On MicroPython the encoder masks in viper (_viper.frame_into: header, key and masked payload
in one call, no allocation; a str's UTF-8 bytes are read in place). `mask_copy(dst, off, src,
n)` is the pure-Python path (CPython, no viper, or a frame of 8 MiB or more): it XORs n bytes
of src with the 4-byte key stored at dst[off-4:off] and writes them to dst[off:off+n],
allocating per frame, never per byte.
"""

try:
    from ._viper import frame_into, str_nbytes

    def text_src(s):
        """What to mask for a str: on MicroPython the str itself (viper reads its UTF-8)."""
        return s

    def nbytes(b):
        """Byte length of a buffer or (MicroPython) a str's UTF-8, without encoding it."""
        # (viper takes a str for a ptr8 argument: its UTF-8 bytes; the stubs cannot say so)
        return str_nbytes(b, len(b)) if isinstance(b, str) else len(b)  # type: ignore[arg-type]

    def text_payload(s):
        return s, str_nbytes(s, len(s))  # type: ignore[arg-type]  # (as in nbytes)

except (ImportError, SyntaxError, NameError):  # CPython, or no viper emitter
    # frames.Encoder tests `frame_into is None` and builds frames in Python (feature
    # detection: the names exist either way, typed as the viper functions)
    frame_into = str_nbytes = None  # type: ignore[assignment]

    def text_src(s):
        return s.encode("utf-8")

    nbytes = len

    def text_payload(s):
        b = s.encode("utf-8")
        return b, len(b)


def mask_copy(dst, off, src, n):
    key = bytes(dst[off - 4:off])
    whole = (key * (n // 4 + 1))[:n]
    x = int.from_bytes(bytes(src[:n]), "little") ^ int.from_bytes(whole, "little")
    dst[off:off + n] = x.to_bytes(n, "little")
