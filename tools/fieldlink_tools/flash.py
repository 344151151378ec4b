"""Put MicroPython on an ESP32 with esptool: erase the flash, write the board's image at its
chip's offset. The image named by the board file must be downloaded first (no network access is
assumed): the error says where from and where to put it. Afterwards: `fieldlink deploy`."""
import os
import subprocess
import sys
from pathlib import Path

from . import paths
from .deploy import DeployError, check_port, load_board

IMAGES = paths.VAR / "images"
_ESP_MAGIC = 0xE9   # first byte of every ESP32-family application/bootloader image


def find_image(board, explicit=None):
    """Path of the image to write, or DeployError saying where to download it."""
    mp = board.get("micropython") or {}
    if explicit:
        p = Path(explicit)
        if not p.is_file():
            raise DeployError("image %s does not exist" % p)
        return p
    name = mp.get("image")
    if not name:
        raise DeployError("board %s names no MicroPython image (micropython.image); pass "
                          "--image FILE" % board.get("name"))
    places = [IMAGES / name, Path.cwd() / name]
    for p in places:
        if p.is_file():
            return p
    raise DeployError(
        "MicroPython image %s is not here (looked in %s).\n"
        "Download it (this tool does not go online) from:\n    %s\n"
        "save it as %s, or pass --image FILE."
        % (name, ", ".join(str(p.parent) for p in places), mp.get("url") or
           "https://micropython.org/download/", IMAGES / name))


def check_image(path):
    with open(path, "rb") as f:
        head = f.read(1)
    if not head or head[0] != _ESP_MAGIC:
        raise DeployError("%s is not an ESP32 firmware image (first byte should be 0x%02X)"
                          % (path, _ESP_MAGIC))


def esptool_commands(board, port, image, baud=460800, erase=True):
    """The esptool command lines that flash this board."""
    chip = board.get("chip")
    mp = board.get("micropython") or {}
    offset = mp.get("flash_offset")
    if chip in (None, "unix"):
        raise DeployError("board %s is the virtual board: nothing to flash (run "
                          "`fieldlink sim --pty` and deploy to the pty it prints)"
                          % board.get("name"))
    if not offset:
        raise DeployError("board %s has no micropython.flash_offset" % board.get("name"))
    base = [sys.executable, "-m", "esptool", "--chip", chip, "--port", port]
    cmds = []
    if erase:
        cmds.append(base + ["erase-flash"])
    cmds.append(base + ["--baud", str(baud), "write-flash", "--compress", str(offset),
                        str(image)])
    return cmds


def add_arguments(parser):
    parser.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyUSB0")
    parser.add_argument("--board", required=True, help="board name (boards/NAME) or a path")
    parser.add_argument("--image", help="MicroPython image file (default: the one the board "
                        "file names, from var/images/ or the current folder)")
    parser.add_argument("--baud", type=int, default=460800, help="baud rate for writing")
    parser.add_argument("--no-erase", action="store_true", help="skip erasing the whole flash "
                        "(keeps files on the board's filesystem if the layout is unchanged)")
    parser.add_argument("--dry-run", action="store_true", help="print the esptool commands; "
                        "touch nothing")


def run(args):
    try:
        board = load_board(args.board)
        image = None
        try:
            image = find_image(board, args.image)
        except DeployError:
            if not args.dry_run:
                raise
            print("(dry run: the image is missing; the real run would stop here)")
            image = IMAGES / ((board.get("micropython") or {}).get("image") or "IMAGE.bin")
        cmds = esptool_commands(board, args.port, image, args.baud, not args.no_erase)
        if args.dry_run:
            for c in cmds:
                print(" ".join(c[2:] if c[1:3] == ["-m", "esptool"] else c))
            return 0
        check_image(image)
        check_port(args.port)
    except DeployError as e:
        print("fieldlink flash: error: %s" % e, file=sys.stderr)
        return 2
    for i, c in enumerate(cmds, 1):
        print("[%d/%d] %s" % (i, len(cmds), " ".join(c[2:])), flush=True)
        r = subprocess.run(c, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        if r.returncode != 0:
            print("fieldlink flash: error: esptool failed (status %d). Hold BOOT while "
                  "pressing EN if the chip does not enter its bootloader by itself."
                  % r.returncode, file=sys.stderr)
            return 1
    print("flashed MicroPython onto %s; next: fieldlink deploy --port %s --board %s"
          % (args.port, args.port, board.get("name")))
    return 0
