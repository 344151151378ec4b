# main.py: start the fieldlink app. A crash is logged and the board resets after a pause;
# Ctrl-C (KeyboardInterrupt) is not caught, so it drops to the REPL for maintenance (app.main
# saves the outbox to flash first: nothing is lost to it).
# (A config error is reported by app.main(), which then returns: the board stays at the REPL.)
# A firmware on trial (boot.py, docs/ota.md) that crashes or stops is rolled back here: the
# previous one runs after the reset, and tells the server why.
import sys
import time


def _fl_rollback(why):
    # True when the running firmware was the one on trial (now given up)
    import os
    try:
        with open("fw/trial") as f:
            t = f.readline().split()
        if not t or sys.path[0] != "fw/" + t[0]:
            return False
        with open("fw/trial", "a") as f:
            f.write("\n%s\n" % why[:100].replace("\n", " "))
        os.rename("fw/trial", "fw/rolled")
        print("ERROR main: firmware %s rolled back: %s" % (t[0], why))
        return True
    except Exception:
        return False


try:
    from fieldlink import app
    app.main()
    if _fl_rollback("stopped at boot (config refused?)"):
        import machine
        machine.reset()
except KeyboardInterrupt:
    raise
except Exception as e:  # the global handler: log, pause (no reset storm), reset
    print("ERROR main: crashed: %s: %s" % (type(e).__name__, e))
    sys.print_exception(e)
    _fl_rollback("crashed: %s: %s" % (type(e).__name__, e))
    time.sleep(5)
    import machine
    machine.reset()
