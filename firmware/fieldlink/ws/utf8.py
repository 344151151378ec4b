"""Incremental UTF-8 validation (RFC 3629) for text messages and close reasons (RFC 6455 §8.1).

MicroPython's bytes.decode() accepts surrogates, overlongs and code points past U+10FFFF, so
the client checks every text payload itself, fragment by fragment: a message split in the
middle of a character is fine, an invalid byte fails as soon as it arrives.
`check(state, buf, n) -> state` where state 0 means "between characters" and -1 means invalid;
any other value carries (bytes still needed << 16 | lowest allowed << 8 | highest allowed).
"""

OK = 0
BAD = -1

try:
    from ._viper import utf8_check as check
except ImportError:  # CPython, or no viper emitter
    def check(state, buf, n):
        if state < 0:
            return -1
        need = state >> 16
        lo = (state >> 8) & 0xFF
        hi = state & 0xFF
        i = 0
        if not need:
            # Fast path for the common all-ASCII prefix.
            while i < n and buf[i] < 0x80:
                i += 1
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
                need, lo, hi = 1, 0x80, 0xBF
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
