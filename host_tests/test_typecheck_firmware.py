"""firmware/ type-checked with mypy against micropython-esp32-stubs (the ESP32 port's
machine, esp32, onewire, dht, ... and MicroPython's stdlib). Config: host_tests/mypy.ini."""
import configparser
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from fieldlink_tools import paths

HERE = Path(__file__).resolve().parent


def _stub_dir(tmp_path):
    """The esp32 stub modules (top-level .pyi files in site-packages, listed in the
    package's RECORD) plus their helper package _mpy_shed, copied where MYPYPATH can
    point (mypy will not take site-packages itself)."""
    sp = Path(sysconfig.get_paths()["purelib"])
    rec = next(sp.glob("micropython_esp32_stubs-*.dist-info")) / "RECORD"
    out = tmp_path / "stubs"
    modules = set()
    for line in rec.read_text().splitlines():
        f = line.split(",")[0]
        if f.endswith(".pyi"):
            (out / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(sp / f, out / f)
            modules.add(f[:-4].replace("/__init__", "").replace("/", "."))
    shutil.copytree(sp / "_mpy_shed", out / "_mpy_shed")
    modules |= {"_mpy_shed", "_mpy_shed.*"}
    return sp, out, sorted(modules)


def test_firmware_typechecks_against_esp32_stubs(tmp_path):
    sp, stubs, modules = _stub_dir(tmp_path)
    assert "machine" in modules and "esp32" in modules and "onewire" in modules
    assert (sp / "stdlib" / "VERSIONS").is_file(), "micropython-stdlib-stubs not installed"
    cfg = tmp_path / "mypy.ini"
    cfg.write_text((HERE / "mypy.ini").read_text()
                   + "\n[mypy-%s]\nignore_errors = True\n" % ",".join(modules))
    r = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(cfg), "--custom-typeshed-dir",
         str(sp), "--cache-dir", str(tmp_path / "cache"), "--no-error-summary"],
        cwd=paths.ROOT, env={"MYPYPATH": str(stubs), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_stubs_are_really_used(tmp_path):
    """A wrong use of machine must fail: proves the stubs are found, not silently Any."""
    sp, stubs, _ = _stub_dir(tmp_path)
    bad = tmp_path / "bad.py"
    bad.write_text("import machine\nmachine.Pin(4).no_such_method()\n")
    r = subprocess.run(
        [sys.executable, "-m", "mypy", "--custom-typeshed-dir", str(sp), "--cache-dir",
         str(tmp_path / "cache"), "--follow-imports=silent", str(bad)],
        env={"MYPYPATH": str(stubs), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and '"Pin" has no attribute "no_such_method"' in r.stdout, r.stdout


def test_files_cover_all_of_firmware():
    """Every .py copied to a board is in mypy.ini's `files` (a new module or subpackage
    must not slip past the check). manifest.py is the build host's, not the board's."""
    cp = configparser.ConfigParser()
    cp.read(HERE / "mypy.ini")
    checked = set()
    for entry in cp["mypy"]["files"].split(","):
        entry = entry.strip()
        p = paths.ROOT / entry
        found = (list(paths.ROOT.glob(entry)) if "*" in entry
                 else list(p.rglob("*.py")) if p.is_dir() else [p])
        assert found and all(f.is_file() for f in found), entry
        checked |= {f.resolve() for f in found}
    fw = paths.ROOT / "firmware"
    want = {f.resolve() for f in fw.rglob("*.py")} - {(fw / "manifest.py").resolve()}
    assert sorted(str(f) for f in want - checked) == []
