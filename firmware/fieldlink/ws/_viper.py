"""Viper (native machine code) versions of the WebSocket client's hot paths, for MicroPython:
the byte loops of frames.py and utf8.py, and WebSocket.send's fast path (client.py).

Their source is text in _viper_src.py that the board's own compiler turns into machine code
here, at import: viper code in a .py file makes mpy-cross demand a target architecture, and a
.mpy holding machine code runs on one architecture only. This way every firmware file
compiles with plain `mpy-cross` (or freezes) into portable bytecode. _viper_src is dropped
once compiled (a loaded module keeps its string constants in the heap). Importing this fails
(ImportError) on CPython, on a port without the viper emitter or the compiler, or when
compiling runs out of memory; the pure-Python paths then serve.
"""
try:
    import micropython
except ImportError:
    raise ImportError("viper needs MicroPython")


def _compile():
    import sys
    from . import _viper_src as src
    # The compiled functions' globals. send's: builtins as globals (found without the
    # builtins-table search) and the exhausted iterator `await` takes as "already done".
    ns = {"micropython": micropython, "const": micropython.const, "_type": type,
          "_str": str, "_len": len, "_READY": iter(range(0))}
    try:
        try:
            exec(src.LOOPS, ns)
        except (SyntaxError, MemoryError, NotImplementedError, NameError) as e:
            raise ImportError("viper: %s" % e)  # the one failure its importers expect
        try:
            exec(src.SEND, ns)
        except (SyntaxError, MemoryError, NotImplementedError, NameError) as e:
            print("WARN ws: no viper send path: %s" % e)
            ns["send"] = None  # client.py keeps its general send()
    finally:
        name = src.__name__
        del src
        sys.modules.pop(name, None)
        delattr(sys.modules[name.rsplit(".", 1)[0]], "_viper_src")  # set by the import
    return ns


_ns = _compile()
str_nbytes = _ns["str_nbytes"]
utf8_check = _ns["utf8_check"]
frame_into = _ns["frame_into"]
send = _ns["send"]      # becomes WebSocket.send
READY = _ns["_READY"]   # what send returns when the frame went out in one write
del _ns, _compile
