# boot.py: runs first on every reset. Kept minimal on purpose: no Wi-Fi loop here (the link
# supervisor in main.py brings Wi-Fi up with deadlines), nothing that could lock out the REPL.
# It also picks the firmware (docs/ota.md): the version on trial (fw/trial) while it has boots
# left, else the confirmed one (fw/current), else the package at the root (a board deployed
# with `fieldlink deploy`, never updated over the link). It never raises: on any error the
# board boots what is at the root.
import gc
import sys


def _fl_pick():
    import os
    try:
        with open("fw/trial") as f:
            t = f.readline().split()
    except OSError:
        t = None
    if t:
        # One byte per boot on trial (an append is whole or absent after a power cut): a new
        # firmware that resets before it confirms itself is given up after 3 boots.
        n = 0
        try:
            with open("fw/tries", "a") as f:
                f.write("x")
            n = os.stat("fw/tries")[6]
        except OSError:
            pass
        if n <= 3:
            return t[0]
        try:
            with open("fw/trial", "a") as f:
                f.write("\nreset loop: %d boots without confirming\n" % (n - 1))
            os.rename("fw/trial", "fw/rolled")
        except OSError:
            pass
    try:
        with open("fw/current") as f:
            return f.readline().strip()
    except OSError:
        return None


try:
    _fl_v = _fl_pick()
    if _fl_v:
        sys.path.insert(0, "fw/" + _fl_v)
    _fl_v = None
except Exception:
    pass
del _fl_pick
gc.collect()
