# dual: runs on CPython and on MicroPython
"""The leveled logger: the line format `fieldlink monitor` parses, level filtering, and
set_level refusing an unknown name at once (it used to store the string and make every later
log call raise TypeError)."""
from dualsupport import raises

from fieldlink import log


def capture(level):
    lines = []
    log.set_sink(lines.append)
    log.set_level(level)
    return lines


def restore():
    log.set_sink(print)
    log.set_level("info")


def test_line_format_and_filtering():
    try:
        lines = capture("warn")
        lg = log.Logger("link")
        lg.info("hidden")
        lg.warn("streaming to %s", "ws://h/ws")
        lg.error("x")
        assert lines == ["WARN link: streaming to ws://h/ws", "ERROR link: x"]
        log.set_level(log.DEBUG)
        lg.debug("%d ms", 5)
        assert lines[-1] == "DEBUG link: 5 ms"
    finally:
        restore()


def test_unknown_level_name_refused_and_level_kept():
    try:
        lines = capture("error")
        e = raises(ValueError, log.set_level, "WARN")
        assert "WARN" in str(e)
        log.Logger("t").warn("still filtered")
        log.Logger("t").error("still logged")
        assert lines == ["ERROR t: still logged"]
    finally:
        restore()
