"""Stand-in for the ESP32's `machine` module on the virtual board (MicroPython unix port).
Conventions shared with the sim host: reset()/soft_reset() flush stdout and exit with status
75 (the host restarts the interpreter like a reboot), deepsleep(ms) with 77 after saying how
long (the host starts it again that much later, DEEPSLEEP_RESET); reset_cause() reads
$FIELDLINK_VBOARD_RESET_CAUSE (a name like WDT_RESET or a number; default PWRON_RESET),
wake_reason() $FIELDLINK_VBOARD_WAKE_REASON.

On an ESP32 `machine` is C code and costs the heap nothing, so this file holds only what
every boot uses (reset, reset_cause). The rest is loaded on first use (module __getattr__,
PEP 562; MicroPython has it with MICROPY_MODULE_GETATTR, as the unix and ESP32 ports do):
  Pin, Signal: simdev/machine_io.py; I2C, SoftI2C and the device models behind them:
  simdev/i2c.py; ADC: simdev/adc.py
  WDT: _machine_wdt.py
  constants, RTC, sleep modes, unique_id, freq, ...: _machine_sys.py"""
import os
import sys


def _exit(why):
    try:
        sys.stdout.flush()
    except Exception:
        pass
    print("vboard: %s" % why)
    sys.exit(75)  # the sim host restarts the interpreter (fieldlink_tools.sim.EXIT_RESET)


def reset():
    _exit("reset")


def reset_cause():
    v = os.getenv("FIELDLINK_VBOARD_RESET_CAUSE")
    if not v:
        return 1  # PWRON_RESET
    try:
        return int(v)
    except ValueError:
        import _machine_sys
        return getattr(_machine_sys, v, 1)


def __getattr__(name):
    if name in ("Pin", "Signal"):
        import simdev.machine_io as m
    elif name in ("I2C", "SoftI2C"):
        import simdev.i2c as m
    elif name == "ADC":
        import simdev.adc as m
    elif name == "WDT":
        import _machine_wdt as m
    else:
        import _machine_sys as m
    v = getattr(m, name)  # AttributeError: the ESP32's machine has no such name either
    globals()[name] = v   # later lookups find it without this call
    return v
