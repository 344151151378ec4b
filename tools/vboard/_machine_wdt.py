"""machine.WDT for the virtual board (tools/vboard/machine.py loads it on first use)."""
import os
import time


class WDT:
    """Hardware watchdog. A background thread (_thread; the unix port's threads are
    GIL-less) checks the last feed; on expiry it prints 'vboard: WDT timeout' and kills the
    process with SIGTERM: the unix port cannot make another thread exit with a status (a
    thread's sys.exit ends only that thread, and exceptions raised in micropython.schedule
    callbacks are printed and dropped), so the host sees -15."""

    def __init__(self, id=0, timeout=5000):
        import _thread
        self.timeout = timeout
        self._last = time.ticks_ms()
        _thread.start_new_thread(self._watch, ())

    def feed(self):
        self._last = time.ticks_ms()

    def _watch(self):
        while True:
            time.sleep_ms(min(100, self.timeout))
            if time.ticks_diff(time.ticks_ms(), self._last) > self.timeout:
                print("vboard: WDT timeout (%d ms without feed), resetting" % self.timeout)
                os.system("kill -TERM $PPID")
                return
