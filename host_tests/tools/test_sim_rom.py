"""The virtual board with its firmware in ROM (`fieldlink sim --rom`, tools/fieldlink_tools/
rom.py): a ROMFS image of the compiled package and the stand-ins, mapped read-only into the
board's memory and mounted at /rom before boot.py, where the board imports the firmware from
and where its bytecode runs in place, taking no heap."""
import os
import subprocess

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
