"""Put MicroPython on an ESP32 with esptool: erase the flash, write the board's image at its
chip's offset. The image named by the board file must be downloaded first (no network access is
assumed): the error says where from and where to put it. Afterwards: `fieldlink deploy`."""
import os
import re
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
    """The esptool command lines that flash this board: write (erasing the whole flash first
    unless erase is False; esptool checks that the image fits before it erases anything, and
    checks the written data's hash), then verify the flash against the image again."""
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
    # no reset between the steps: a chip put into its bootloader by hand stays there to verify
    write = base + ["--baud", str(baud), "--after", "no-reset", "write-flash"]
    if erase:
        write.append("--erase-all")
    write += ["--compress", str(offset), str(image)]
    return [write, base + ["verify-flash", str(offset), str(image)]]


def _size(n):
    return "%d MB" % (n >> 20) if n >= 1 << 20 and not n & 0xFFFFF else "%d bytes" % n


def explain_failure(output, status, board, port, image):
    """One line for the user from esptool's output when it failed (status != 0)."""
    m = re.search(r"will not fit in (\d+) bytes of flash", output)
    if m:
        offset = (board.get("micropython") or {}).get("flash_offset")
        return ("%s (%d bytes) at %s does not fit the chip's %s flash: is it the image for "
                "board %s? nothing was erased or written"
                % (Path(image).name, os.path.getsize(image), offset, _size(int(m.group(1))),
                   board.get("name")))
    m = re.search(r"This chip is (\S+), not (\S+?)\.", output)
    if m:
        return ("the chip on %s is an %s, but board %s is an %s: pass the board file for "
                "this chip (boards/)" % (port, m.group(1), board.get("name"), board.get("chip")))
    m = re.search(r"'[^\n]*' is not an? (\S+) image", output)
    if m:
        return ("%s is not an image for the %s of board %s (its header names another chip): "
                "download the board's image from %s"
                % (Path(image).name, m.group(1), board.get("name"),
                   (board.get("micropython") or {}).get("url")))
    m = re.search(r"Failed to connect to [^:]*: ([^\n]*)", output)
    if m:
        return ("no ESP32 bootloader answered on %s (%s). Is it the board's port? To enter "
                "the bootloader hold BOOT while pressing EN; close any program using the port "
                "(fieldlink monitor, mpremote, a terminal)" % (port, m.group(1).strip()))
    m = re.search(r"Could not open port [^\n]*?: ([^\n]*?)\)?\n", output)
    if m or "Could not open" in output:
        return "cannot open %s%s" % (port, ": " + m.group(1) if m else "")
    m = re.findall(r"fatal error occurred: ([^\n]*)", output)
    return "esptool failed (status %d)%s" % (status, ": " + m[-1] if m else "")


def run_esptool(cmd, out=None, keep=16384):
    """Run one esptool command, passing its output (the progress included) straight through;
    returns (status, the last `keep` bytes of output as text) for explain_failure."""
    out = out or getattr(sys.stdout, "buffer", None)   # a captured stdout may have none
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    tail = bytearray()
    try:
        while True:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            if out is None:
                sys.stdout.write(chunk.decode("utf-8", "replace"))
                sys.stdout.flush()
            else:
                out.write(chunk)
                out.flush()
            tail += chunk
            del tail[:-keep]
    except KeyboardInterrupt:
        proc.wait()
        raise
    finally:
        proc.stdout.close()
    return proc.wait(), tail.decode("utf-8", "replace")


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
        try:
            status, output = run_esptool(c)
        except KeyboardInterrupt:
            print("fieldlink flash: interrupted: the flash may hold a partial image; run "
                  "fieldlink flash again", file=sys.stderr)
            return 130
        if status != 0:
            print("fieldlink flash: error: %s"
                  % explain_failure(output, status, board, args.port, image), file=sys.stderr)
            return 1
    print("flashed MicroPython onto %s and verified it; next: fieldlink deploy --port %s "
          "--board %s" % (args.port, args.port, board.get("name")))
    return 0
