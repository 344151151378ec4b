# main.py: start the fieldlink app. A crash is logged and the board resets after a pause;
# Ctrl-C (KeyboardInterrupt) is not caught, so it drops to the REPL for maintenance (app.main
# saves the outbox to flash first: nothing is lost to it).
# (A config error is reported by app.main(), which then returns: the board stays at the REPL.)
import sys
import time

try:
    from fieldlink import app
    app.main()
except KeyboardInterrupt:
    raise
except Exception as e:  # the global handler: log, pause (no reset storm), reset
    print("ERROR main: crashed: %s: %s" % (type(e).__name__, e))
    sys.print_exception(e)
    time.sleep(5)
    import machine
    machine.reset()
