"""A small leveled logger. One stable line format that `fieldlink monitor` parses:

    LEVEL tag: message          e.g.  INFO link: streaming to ws://10.0.0.2:8765/ws

LEVEL is one of DEBUG, INFO, WARN, ERROR; tag is one word naming the part of the firmware.
"""
try:
    from micropython import const
except ImportError:  # CPython
    def const(x):  # type: ignore[misc]  # the stubs' const is generic
        return x

DEBUG = const(10)
INFO = const(20)
WARN = const(30)
ERROR = const(40)

_level = INFO
_sink = print


def set_level(name_or_number):
    """A name (debug, info, warn, error) or a number. An unknown name is refused here: kept
    as the level, it made every later log call raise TypeError (str compared with int)."""
    global _level
    if isinstance(name_or_number, str):
        names = ("debug", "info", "warn", "error")
        if name_or_number not in names:
            raise ValueError("log level %r: expected debug, info, warn or error"
                             % name_or_number)
        name_or_number = 10 * names.index(name_or_number) + DEBUG
    _level = name_or_number


def set_sink(fn):
    """Where lines go (print by default); tests capture them."""
    global _sink
    _sink = fn


def log(level, tag, msg, *args):
    if level < _level:
        return
    if args:
        msg = msg % args
    i = level // 10 - 1  # DEBUG..ERROR are 10..40
    _sink("%s %s: %s" % (("DEBUG", "INFO", "WARN", "ERROR")[i] if 0 <= i < 4 else "INFO",
                         tag, msg))


class Logger:
    """log.Logger("link").info("connected in %d ms", ms)"""

    def __init__(self, tag):
        self.tag = tag

    def debug(self, msg, *args):
        log(DEBUG, self.tag, msg, *args)

    def info(self, msg, *args):
        log(INFO, self.tag, msg, *args)

    # lets a Logger be passed where a print-like callable is expected (Sampler's log=)
    __call__ = info

    def warn(self, msg, *args):
        log(WARN, self.tag, msg, *args)

    def error(self, msg, *args):
        log(ERROR, self.tag, msg, *args)
