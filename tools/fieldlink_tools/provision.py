"""Write a device's Wi-Fi, server URL, device id and token into its config: a local file
(`--config FILE`), the board itself (`--port PORT`), or both. Starts from what is already there,
asks for what is missing (secrets with getpass, never echoed or printed), checks the result
with the firmware's own schema, then writes. Secrets can also come from the environment
(FIELDLINK_WIFI_PASSWORD, FIELDLINK_TOKEN), which keeps them out of shell history.
"""
import getpass
import json
import os
import sys

from .deploy import CONFIG_FILE, DeployError, MpremoteLink, check_device_id, check_port, \
    firmware_module

# key, prompt, secret
FIELDS = (
    ("wifi_ssid", "Wi-Fi network name", False),
    ("wifi_password", "Wi-Fi password", True),
    ("url", "collector URL (ws://host:8765/ws or wss://...)", False),
    ("device_id", "device id", False),
    ("token", "device token", True),
)
_ENV = {"wifi_password": "FIELDLINK_WIFI_PASSWORD", "token": "FIELDLINK_TOKEN"}


def add_arguments(parser):
    parser.add_argument("--config", help="config file to create or update")
    parser.add_argument("--port", help="also (or only) write config.json onto this board")
    parser.add_argument("--wifi-ssid")
    parser.add_argument("--wifi-password", help="prefer $FIELDLINK_WIFI_PASSWORD or the prompt")
    parser.add_argument("--url")
    parser.add_argument("--device-id")
    parser.add_argument("--token", help="prefer $FIELDLINK_TOKEN or the prompt")
    parser.add_argument("--ask", action="store_true", help="ask for every field, showing the "
                        "current value (secrets: Enter keeps the current one)")
    parser.add_argument("--replace-device", action="store_true", help="allow changing the "
                        "device id of a board that already has one")
    parser.add_argument("--timeout", type=float, default=10)


def _describe(key, value):
    if key in _ENV:
        return "<secret, %d characters>" % len(value) if value else "<empty>"
    return json.dumps(value)


def _ask(key, prompt, secret, current, interactive):
    if not interactive:
        raise DeployError("%s is missing and there is no terminal to ask on: pass --%s%s"
                          % (key, key.replace("_", "-"), " or set $%s" % _ENV[key]
                             if key in _ENV else ""))
    shown = "" if current is None else (" [keep current]" if secret else " [%s]" % current)
    while True:
        if secret:
            v = getpass.getpass("%s%s: " % (prompt, shown))
        else:
            v = input("%s%s: " % (prompt, shown)).strip()
        if v:
            return v
        if current is not None:
            return current
        if key == "wifi_password":
            return ""   # an open network
        print("  %s is required" % key)


def gather(args, existing, interactive):
    """The new config dict: existing values, overridden by options/env, then prompts."""
    cfg = dict(existing)
    for key, prompt, secret in FIELDS:
        given = getattr(args, key)
        if given is None and key in _ENV:
            given = os.environ.get(_ENV[key])
        if given is not None:
            cfg[key] = given
        elif args.ask or key not in cfg or (cfg[key] in ("", None) and key != "wifi_password"):
            cfg[key] = _ask(key, prompt, secret, cfg.get(key), interactive)
    return cfg


def run(args):
    try:
        return _provision(args)
    except DeployError as e:
        print("fieldlink provision: error: %s" % e, file=sys.stderr)
        return 2


def _provision(args):
    if not args.config and not args.port:
        raise DeployError("say where the config goes: --config FILE and/or --port PORT")
    interactive = sys.stdin.isatty()
    existing, link, info = {}, None, None
    if args.config and os.path.exists(args.config):
        try:
            with open(args.config) as f:
                existing = json.load(f)
        except ValueError as e:
            raise DeployError("%s is not valid JSON: %s" % (args.config, e))
    try:
        if args.port:
            check_port(args.port)
            link = MpremoteLink(args.port, args.timeout)
            info = link.probe([CONFIG_FILE])
            if not existing and info["files"].get(CONFIG_FILE) is not None:
                out = link._exec("print(open(%r).read())" % CONFIG_FILE)
                try:
                    existing = json.loads(out.decode())
                except ValueError:
                    existing = {}
        cfg = gather(args, existing, interactive)
        config_mod = firmware_module("config")
        try:
            config_mod.load(cfg)
        except config_mod.ConfigError as e:
            raise DeployError("the config would fail the firmware's schema: %s" % e)
        if info is not None:
            check_device_id(cfg["device_id"], info, {}, args.replace_device)
        data = json.dumps(cfg, indent=1) + "\n"
        if args.config:
            # The file holds secrets: readable by its owner only.
            fd = os.open(args.config + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(data)
            os.replace(args.config + ".tmp", args.config)
            print("wrote %s" % args.config)
        if link is not None:
            link.write(CONFIG_FILE, data.encode())
            print("wrote %s on the board on %s (it takes effect at the next reset)"
                  % (CONFIG_FILE, args.port))
    finally:
        if link is not None:
            link.close()
    for key, _, _ in FIELDS:
        print("  %-14s %s" % (key, _describe(key, cfg[key])))
    return 0
