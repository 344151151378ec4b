# Runs on the MicroPython unix port (fieldlink bench heap): boots the app the way
# fieldlink.app.main() does, step by step, and prints the live heap after a collection at each
# step, then what importing each named module costs on top. Run in a prepared flash directory.
import gc
import sys

# The unix port puts a script's own directory first on sys.path; a board (and SimBoard's `-c`
# boot) has '' there: the flash, where sim.prepare_flash installed fieldlink/*.mpy.
sys.path[0] = ""
_prev = [0]


def step(tag):
    gc.collect()
    a = gc.mem_alloc()
    print("HEAP %s %d %d" % (tag, a, a - _prev[0]))
    _prev[0] = a


step("interpreter")
import asyncio  # noqa: E402
step("asyncio")
from fieldlink import app  # noqa: E402
step("fieldlink.app")


def boot(fn, *args, **kw):
    """One boot step from fieldlink.start, which app.main() drops after boot: its code is
    freed again here (its own frame: no stale reference to the module is left behind)."""
    from fieldlink import start
    r = getattr(start, fn)(*args, **kw)
    start.unload("fieldlink.start")
    return r


cfg = boot("load_settings", "config.json")
step("config (checked, unloaded)")
name, sensors, outputs = boot("build_sensors", cfg.board_file)
step("board+sensors (board unloaded)")
import machine  # noqa: E402
step("machine (virtual board)")
import network  # noqa: E402
step("network (virtual board)")
for m in sys.argv[1:]:
    __import__(m)
    step(m)
a = boot("make_app", cfg, name, sensors, wlan=network.WLAN(network.STA_IF), outputs=outputs)
step("App() data")
