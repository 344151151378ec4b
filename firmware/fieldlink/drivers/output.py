"""Output drivers (docs/outputs.md): an output's value, in the protocol's units, onto the
machine.Pin board.py made for it (a PWM channel on it for pwm and servo). Drivers only
`set(v)`: the control core decides the value. Built by output_boot.py; loaded only for a board
with outputs."""


def duty_u16(duty):
    """A duty 0.0-1.0 -> machine.PWM's 0-65535."""
    d = int(duty * 65535 + 0.5)
    return 0 if d < 0 else 65535 if d > 65535 else d


def servo_u16(angle, freq, min_us, max_us, range_deg):
    """A servo angle -> duty_u16 at `freq` Hz: the pulse runs from min_us (0 degrees) to
    max_us (range_deg), linearly."""
    us = min_us + (max_us - min_us) * angle / range_deg
    return duty_u16(us * freq / 1000000)


class Digital:
    """A relay, LED or any on/off load; active_low: the pin low means on."""

    def __init__(self, pin, active_low=False):
        self._pin = pin
        self._inv = 1 if active_low else 0

    def set(self, v):
        self._pin.value((1 if v else 0) ^ self._inv)


class Pwm:
    """A PWM load (heater, dimmer, fan speed): duty 0.0-1.0; active_low inverts it."""

    def __init__(self, pwm, active_low=False):
        self._pwm = pwm
        self._inv = bool(active_low)

    def set(self, duty):
        self._pwm.duty_u16(duty_u16(1.0 - duty if self._inv else duty))


class Servo:
    """A hobby servo on a PWM channel: an angle in degrees, 0..range_deg."""

    def __init__(self, pwm, freq, min_us, max_us, range_deg):
        self._pwm = pwm
        self._k = (freq, min_us, max_us, range_deg)

    def set(self, angle):
        f, lo, hi, rng = self._k
        self._pwm.duty_u16(servo_u16(angle, f, lo, hi, rng))
