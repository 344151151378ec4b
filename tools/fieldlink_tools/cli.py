"""The `fieldlink` command: the host-side tools of fieldlink, one subcommand per module.

Each subcommand module exposes `add_arguments(parser)` and `run(args) -> int`.
"""
import argparse
import importlib
import signal
import sys

from . import upy

# name -> (module, one-line help). A module that does not exist yet is left out of the CLI
# rather than faked.
COMMANDS = {
    "demo": ("fieldlink_tools.demo", "run the collector and one simulated board; show readings"),
    "server": ("fieldlink_tools.collector.cli", "run the collector (WebSocket server + dashboard)"),
    "sim": ("fieldlink_tools.sim", "run the firmware on the virtual board (MicroPython unix port)"),
    "bench": ("fieldlink_tools.bench", "benchmarks that print numbers"),
    "fleet": ("fieldlink_tools.fleet", "many lightweight protocol devices: load for a collector"),
    "soak": ("fieldlink_tools.soak", "long fault campaign; prints counts"),
    "boards": ("fieldlink_tools.boards", "list and validate board files"),
    "flash": ("fieldlink_tools.flash", "put MicroPython on an ESP32 with esptool"),
    "deploy": ("fieldlink_tools.deploy", "copy the firmware, board file and config to a board"),
    "provision": ("fieldlink_tools.provision", "write Wi-Fi, server, device id and token to a config"),
    "monitor": ("fieldlink_tools.monitor", "show a board's log, readably"),
    "ota": ("fieldlink_tools.ota", "push a firmware update to devices over their link"),
    "ctl": ("fieldlink_tools.ctl", "set a device's output (desired state) on the collector"),
}


def build_parser():
    parser = argparse.ArgumentParser(prog="fieldlink", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (modname, help_) in COMMANDS.items():
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as e:
            if e.name and modname.startswith(e.name):
                continue  # not built yet: leave it out of the CLI rather than fake it
            raise
        # the module's docstring as written: its example lines and lists stay lines
        p = sub.add_parser(name, help=help_, description=(mod.__doc__ or help_).strip(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    # SIGTERM (kill, systemd, CI timeouts) and SIGHUP (the terminal closed) unwind like
    # Ctrl-C, so `finally` blocks stop the collector and board processes a command started
    # instead of leaving them orphaned (boards run in a session of their own: sim.SimBoard).
    old = signal.signal(signal.SIGTERM, _interrupt)
    old_hup = signal.signal(signal.SIGHUP, _interrupt)
    try:
        return args._run(args) or 0
    except KeyboardInterrupt:
        return 130
    except upy.MicroPythonMissing as e:
        print("fieldlink %s: %s" % (args.command, e), file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, old)
        signal.signal(signal.SIGHUP, old_hup)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
