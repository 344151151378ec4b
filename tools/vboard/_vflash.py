"""The virtual board's flash size: with $FIELDLINK_VBOARD_FLASH_BYTES set (SimBoard's
flash_bytes), `os` is this module, which is the unix port's os but for statvfs: it reports a
filesystem of that many bytes in 4 KiB blocks (littlefs's on an ESP32), less what the files
under the flash directory take (each rounded up to whole blocks, one block per directory).
Imported before boot.py, so the firmware's `import os` finds it in sys.modules."""
import sys

from os import *  # noqa: F401,F403  # everything the firmware uses, as the port has it
from os import ilistdir, stat

_BS = 4096
_LIMIT = int(getenv("FIELDLINK_VBOARD_FLASH_BYTES"))  # noqa: F405


def _used(p):
    n = _BS
    for e in ilistdir(p):
        q = p + "/" + e[0]
        if e[1] == 0x4000:
            n += _used(q)
        else:
            n += (stat(q)[6] + _BS - 1) // _BS * _BS
    return n


def statvfs(path):
    blocks = _LIMIT // _BS
    free = max(0, blocks - _used(".") // _BS)
    return (_BS, _BS, blocks, free, free, 0, 0, 0, 0, 255)


sys.modules["os"] = sys.modules[__name__]
