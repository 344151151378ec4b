"""The board's configuration (config.json on flash): a schema with defaults, checked at boot.
An error names the key and what it expected; secrets never appear in repr or logs."""
import json

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):  # type: ignore[misc]  # the stubs' const is generic
        return x

TYPE_CHECKING = False
if TYPE_CHECKING:  # mypy only: MicroPython has no typing module
    from typing import Any, Callable

SECRETS = ("wifi_password", "token", "ota_key")


class ConfigError(ValueError):
    def __init__(self, key, expected, got=None, have=True):
        msg = "config.%s: expected %s" % (key, expected)
        if have:
            msg += ", got %s" % _show(key, got)
        super().__init__(msg)
        self.key = key


def _show(key, v):
    if key in SECRETS:
        return "<secret>"
    s = json.dumps(v) if not isinstance(v, (bytes, bytearray)) else repr(v)
    return s if len(s) <= 40 else s[:37] + "..."


# One wait on the board (asyncio.sleep, wait_for) must stay under half the ticks period: an
# ESP32's asyncio refuses 2**29 ms (~6.2 days) and more. Timeouts and intervals of the link
# are capped at a day (sampling intervals may be longer: the sampler waits in steps).
_DAY = const(86400)

# ---- validators: each returns the (possibly converted) value or raises ConfigError ----

def _num(lo=None, hi=None, gt=None):
    def check(key, v):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(key, _num_what(lo, hi, gt), v)
        if (lo is not None and v < lo) or (hi is not None and v > hi) or \
                (gt is not None and v <= gt):
            raise ConfigError(key, _num_what(lo, hi, gt), v)
        return v
    return check


def _num_what(lo, hi, gt, kind="a number"):
    parts = []
    if gt is not None:
        parts.append("> %s" % gt)
    if lo is not None:
        parts.append(">= %s" % lo)
    if hi is not None:
        parts.append("<= %s" % hi)
    return kind + ((" " + " and ".join(parts)) if parts else "")


def _int(lo=None, hi=None):
    def check(key, v):
        if isinstance(v, bool) or not isinstance(v, int) or \
                (lo is not None and v < lo) or (hi is not None and v > hi):
            raise ConfigError(key, _num_what(lo, hi, None, "an integer"), v)
        return v
    return check


def _text(min_len=0, max_len=256, nullable=False):
    def check(key, v):
        if v is None and nullable:
            return v
        if not isinstance(v, str) or not min_len <= len(v) <= max_len:
            what = "a string of %d to %d characters" % (min_len, max_len)
            raise ConfigError(key, what + (" or null" if nullable else ""), v)
        return v
    return check


def _device_id(key, v):
    ok = isinstance(v, str) and 1 <= len(v) <= 32
    if ok:
        for c in v:
            if not (("a" <= c <= "z") or ("A" <= c <= "Z") or ("0" <= c <= "9") or c in "_.-"):
                ok = False
                break
    if not ok:
        raise ConfigError(key, "1-32 characters from A-Z a-z 0-9 _ . -", v)
    return v


def _url(key, v):
    if not isinstance(v, str) or not (v.startswith("ws://") or v.startswith("wss://")) or \
            len(v.split("/", 3)[2]) == 0:
        raise ConfigError(key, "a ws:// or wss:// URL", v)
    return v


def _one_of(*choices):
    def check(key, v):
        if v not in choices:
            raise ConfigError(key, "one of " + ", ".join(choices), v)
        return v
    return check


def _obj(key, v):
    if not isinstance(v, dict):
        raise ConfigError(key, "an object", v)
    return v


_REQUIRED = object()

# key, default, validator, one-line meaning (docs/architecture.md has the same table)
SCHEMA = (  # type: tuple[tuple[str, Any, Callable[[str, Any], Any], str], ...]
    ("device_id", _REQUIRED, _device_id, "device id, also the X-Fieldlink-Device header"),
    ("token", _REQUIRED, _text(1, 256), "per-device secret token (Authorization: Bearer)"),
    ("url", _REQUIRED, _url, "collector URL, ws:// or wss://"),
    ("ca_file", None, _text(1, 128, True), "CA certificate (PEM/DER) for wss://, null = default"),
    ("wifi_ssid", "", _text(0, 32), "Wi-Fi network name"),
    ("wifi_password", "", _text(0, 64), "Wi-Fi password (secret)"),
    ("wifi_timeout_s", 20, _num(hi=_DAY, gt=0), "give up one Wi-Fi attempt after this long"),
    ("ping_interval_s", 20, _num(lo=1, hi=_DAY), "WebSocket ping every this many seconds"),
    ("ping_timeout_s", 10, _num(lo=1, hi=_DAY), "link is dead when a pong is this late"),
    ("backoff_base_s", 1, _num(gt=0), "first reconnect delay bound"),
    ("backoff_max_s", 60, _num(gt=0), "reconnect delay cap; also the 401/403 retry delay"),
    ("stable_after_s", 30, _num(lo=0), "link up this long resets the backoff"),
    ("connect_timeout_s", 10, _num(hi=_DAY, gt=0), "DNS+TCP+TLS+handshake deadline"),
    ("outbox_ram_bytes", 8192, _int(1024), "outbox bytes kept in RAM"),
    ("outbox_flash_bytes", 65536, _int(0), "outbox bytes spilled to flash (0 = RAM only)"),
    ("outbox_dir", "outbox", _text(1, 64), "flash directory of the outbox"),
    ("spill_after_s", 30, _num(lo=0), "link down this long: spill RAM readings to flash"),
    ("batch_max", 20, _int(1, 500), "readings per batch message"),
    ("window", 64, _int(1, 10000), "readings in flight before waiting for an ack"),
    ("sample_interval_s", 10, _num(gt=0), "default sampling interval of every sensor"),
    ("health_interval_s", 60, _num(lo=1, hi=_DAY), "health message interval"),
    ("ntp_host", "pool.ntp.org", _text(1, 64, True), "SNTP server; null = take the "
                                                      "collector's welcome time"),
    ("board_file", "board.json", _text(1, 64), "board description file on flash"),
    ("wdt_s", 30, _num(lo=0), "hardware watchdog timeout (0 = off)"),
    ("failsafe_s", 60, _num(lo=0, hi=_DAY), "outputs go to safe after this long without the "
                                            "server (or a rule's reading); 0 = never"),
    ("sampling", {}, _obj, "per-sensor sampling settings (see sampling.check_config)"),
    ("ota_key", None, _text(16, 128, True), "secret that signs firmware updates (HMAC-SHA256;"
                                            " null = updates refused)"),
    ("ota_trial_s", 300, _num(hi=_DAY, gt=0), "a new firmware must connect and get readings "
                                              "acked within this long, or it is rolled back"),
    ("log_level", "info", _one_of("debug", "info", "warn", "error"), "log verbosity"),
    ("duty_cycle_s", 0, _num(lo=0, hi=_DAY), "battery mode: wake every this many seconds, "
                                             "then deep sleep (0 = always on)"),
    ("connect_every", 1, _int(1, 1000), "battery mode: connect on every Nth wake only "
                                        "(sample on the others)"),
    ("awake_max_s", 30, _num(hi=_DAY, gt=0), "battery mode: longest a wake may stay awake "
                                             "(server unreachable: sleep again)"),
)
KEYS = tuple(row[0] for row in SCHEMA)
DUTY_KEYS = ("duty_cycle_s", "connect_every", "awake_max_s")   # battery mode (duty.py)


class Config:
    """Checked configuration; attribute per key. repr() hides the secrets."""

    def __init__(self, values):
        for k in values:
            setattr(self, k, values[k])
        self._keys = tuple(values)

    def as_dict(self, redact=True):
        d = {}
        for k in self._keys:
            v = getattr(self, k)
            d[k] = "<secret>" if (redact and k in SECRETS and v) else v
        return d

    def __repr__(self):
        return "Config(%s)" % json.dumps(self.as_dict())


def load(raw):
    """dict (parsed config.json) -> Config, or raise ConfigError naming the first bad key."""
    if not isinstance(raw, dict):
        # the type only: the contents may hold a secret
        raise ConfigError("(top)", "a JSON object, not a %s" % type(raw).__name__, have=False)
    out = {}
    for key, default, check, _ in SCHEMA:
        if key in raw:
            out[key] = check(key, raw[key])
        elif default is _REQUIRED:
            raise ConfigError(key, "a value (required key is missing)", have=False)
        else:
            out[key] = dict(default) if isinstance(default, dict) else default
    for key in raw:
        if key not in out and not key.startswith("_"):  # "_comment" keys are allowed
            # no value shown: a misspelt secret key ("wifi_pasword") holds a secret
            raise ConfigError(key, "a known key (unknown key; typo?)", have=False)
    if out["backoff_max_s"] < out["backoff_base_s"]:
        raise ConfigError("backoff_max_s", "a number >= backoff_base_s (%s)"
                          % out["backoff_base_s"], out["backoff_max_s"])
    _check_sampling(out)
    return Config(out)


def _check_sampling(out):
    try:
        from fieldlink import sampling
    except ImportError:
        return  # the sampler is optional for tools that only read the link settings
    check = getattr(sampling, "check_config", None)
    if check is None:
        return
    try:
        check(out["sampling"])
    except ValueError as e:
        msg = str(e)
        raise ConfigError("sampling", "valid sampling settings (%s)" % msg, have=False)


def load_file(path="config.json"):
    """Read and check the config file; errors name the file's problem or the bad key."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        raise ConfigError("(file)", "a readable %s" % path, have=False)
    try:
        raw = json.loads(text)
    except ValueError:
        raise ConfigError("(file)", "valid JSON in %s" % path, have=False)
    return load(raw)
