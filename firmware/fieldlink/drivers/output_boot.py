"""Outputs at boot (docs/outputs.md): the board file's "outputs" checked (board.check) and
each made into the control core's Output and its driver (board.outputs). Boot only: start.py
drops this module with the board's."""
from fieldlink import control, control_rec
from fieldlink.drivers.output import Digital, Pwm, Servo, duty_u16, servo_u16

TYPE_CHECKING = False
if TYPE_CHECKING:  # mypy only: MicroPython has no typing module
    from typing import Any

TYPES = (control.DIGITAL, control.PWM, control.SERVO)  # a servo is PWM with an angle mapping
SERVO = {"freq": 50, "min_us": 500, "max_us": 2500, "range_deg": 180}
PWM_FREQ = 1000
RESTORES = ("safe", "last")


def _servo(o):
    return (o.get("freq", SERVO["freq"]), o.get("min_us", SERVO["min_us"]),
            o.get("max_us", SERVO["max_us"]), o.get("range_deg", SERVO["range_deg"]))


def check(data, need, pin):
    """The structure of data["outputs"] (and data["restore"]); ValueError naming the key.
    need, pin: board.py's checks. (Which pins can drive an output: the host's validator.)"""
    outs = data["outputs"]
    if data.get("restore", "safe") not in RESTORES:
        raise ValueError("board.json: restore: expected safe or last")
    if not isinstance(outs, list):
        raise ValueError("board.json: outputs: expected a list")
    seen = []
    for i, o in enumerate(outs):
        p = "outputs[%d]." % i
        if not isinstance(o, dict):
            raise ValueError("board.json: outputs[%d]: expected an object" % i)
        name = need(o, "name", p, (str,), "an output name")
        if not control_rec.valid_name(name) or name in seen:
            raise ValueError("board.json: %sname: %r is not 1-32 chars of A-Z a-z 0-9 _ . - "
                             "or is taken" % (p, name))
        seen.append(name)
        t = need(o, "type", p, (str,), "digital, pwm or servo")
        if t not in TYPES:
            raise ValueError("board.json: %stype: expected digital, pwm or servo, got %r"
                             % (p, t))
        pin(o, "pin", p)
        k = _servo(o)
        if t != control.DIGITAL:
            f = o.get("freq", k[0] if t == control.SERVO else PWM_FREQ)
            if not isinstance(f, int) or isinstance(f, bool) or f < 1:
                raise ValueError("board.json: %sfreq: expected Hz (an integer >= 1), got %r"
                                 % (p, f))
        if t == control.SERVO:
            ok = True
            for x in k:
                ok = ok and (isinstance(x, int) or isinstance(x, float)) and \
                    not isinstance(x, bool)
            if not ok or not 0 < k[1] < k[2] or k[2] * k[0] >= 1000000 or k[3] <= 0:
                raise ValueError("board.json: %smin_us/max_us/range_deg: expected numbers "
                                 "0 < min_us < max_us < the period, range_deg > 0" % p)
        if not isinstance(o.get("active_low", False), bool):
            raise ValueError("board.json: %sactive_low: expected true or false" % p)
        if o.get("restore", "safe") not in RESTORES:
            raise ValueError("board.json: %srestore: expected safe or last" % p)
        if "safe" not in o:
            raise ValueError("board.json: %ssafe: required (the value without the server)" % p)
        try:
            control_rec.output(name, t, o["safe"], k[3], o.get("rule"))
        except ValueError as e:
            raise ValueError("board.json: %ssafe/rule: %s" % (p, e))


def make(o, pin, machine, restore):
    """(control.Output, driver, restore mode) for one checked output entry on `pin`; the pin
    is at its safe level from the start (an active-low relay must not click on at boot)."""
    t = o["type"]
    k = _servo(o)
    c = control_rec.output(o["name"], t, o["safe"], k[3], o.get("rule"))
    low = o.get("active_low", False)
    if t == control.DIGITAL:
        pin.init(machine.Pin.OUT, value=(1 if c.safe else 0) ^ low)
        d = Digital(pin, low)  # type: Any
    elif t == control.SERVO:
        d = Servo(machine.PWM(pin, freq=k[0], duty_u16=servo_u16(c.safe, *k)), *k)
    else:
        u = duty_u16(1.0 - c.safe if low else c.safe)
        d = Pwm(machine.PWM(pin, freq=o.get("freq", PWM_FREQ), duty_u16=u), low)
    return c, d, o.get("restore", restore)
