"""`fieldlink deploy` end to end: a fresh virtual board on a pseudo-terminal, the real mpremote
(and ampy), the reset, and what the board does afterwards; bad input refused before anything
is written."""
import json
import os
import pty
import re
import shutil
import time

import pytest

from deploy_harness import ROOT, VBoard, fieldlink, mpremote, snapshot
from fieldlink_tools import deploy as deploy_mod

FIRMWARE = ROOT / "firmware"
VIRTUAL_BOARD = json.loads((ROOT / "boards" / "virtual" / "board.json").read_text())


def make_config(path, device_id="dev-deploy", url="ws://127.0.0.1:9/ws", token="tok-1234"):
    cfg = {"device_id": device_id, "token": token, "url": url, "wifi_ssid": "sim",
           "wifi_password": "sim-pass", "sample_interval_s": 0.2, "health_interval_s": 5}
    path.write_text(json.dumps(cfg))
    return path


def deploy(vb, *extra, tmp_path, board="virtual"):
    return fieldlink("deploy", "--port", vb.port, "--board", board,
                     "--registry", tmp_path / "registry.json", "--timeout", "20", *extra)


def expected_files(root=FIRMWARE, compiled=True):
    out = []
    for rel in deploy_mod.firmware_sources(root):
        if compiled and rel.startswith("fieldlink/"):
            rel = rel[:-3] + ".mpy"
        out.append(rel)
    return out


def assert_rebooted_after_deploy(vb):
    """The deploy's last raw-REPL session is followed by a reboot (the reset is sent as the
    deploy ends, so it may still be under way)."""
    vb.wait_log(r"MPY: soft reboot|rst:0x", timeout=60,
                start=vb.log().rfind("raw REPL; CTRL-B to exit"))


def test_fresh_board_via_mpremote_gets_firmware_board_file_and_config(vboard, tmp_path):
    cfg = make_config(tmp_path / "config.json")
    r = deploy(vboard, "--config", cfg, tmp_path=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    files = snapshot(vboard.flash)
    for rel in expected_files():
        assert rel in files, rel
        if rel.endswith(".mpy"):
            assert (vboard.flash / rel).read_bytes()[:2] == b"M\x06"   # .mpy v6, compiled
        else:
            assert (vboard.flash / rel).read_bytes() == (FIRMWARE / rel).read_bytes()
    assert not any(f.endswith(".py") and f.startswith("fieldlink/") for f in files)
    assert json.loads((vboard.flash / "board.json").read_text()) == VIRTUAL_BOARD
    assert json.loads((vboard.flash / "config.json").read_text()) == json.loads(cfg.read_text())
    # the board was reset afterwards: a reboot shows in its output after the deploy's session
    assert_rebooted_after_deploy(vboard)
    # and the deployed package imports on the board, compiled (.mpy)
    r = mpremote(vboard.port, "exec", "import fieldlink.config as c; print(c.__file__, "
                 "c.load_file().device_id)")
    assert "fieldlink/config.mpy dev-deploy" in r.stdout, r.stdout + r.stderr


def test_source_mode_copies_py(vboard, tmp_path):
    r = deploy(vboard, "--source", "--reset", "none", tmp_path=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    for rel in expected_files(compiled=False):
        assert (vboard.flash / rel).read_bytes() == (FIRMWARE / rel).read_bytes()
    # switching back to compiled removes the .py files that would shadow the .mpy
    r = deploy(vboard, "--reset", "none", tmp_path=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    files = snapshot(vboard.flash)
    assert not [f for f in files if f.startswith("fieldlink/") and f.endswith(".py")]
    assert "fieldlink/config.mpy" in files


def test_redeploy_after_changing_one_file_copies_one_file(vboard, tmp_path):
    fw = tmp_path / "firmware"
    shutil.copytree(FIRMWARE, fw, ignore=shutil.ignore_patterns("__pycache__"))
    cfg = make_config(tmp_path / "config.json")
    args = ("--config", cfg, "--firmware", fw, "--reset", "none")
    r = deploy(vboard, *args, tmp_path=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    before = snapshot(vboard.flash)

    r = deploy(vboard, *args, tmp_path=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"^0 of \d+ files changed", r.stdout, re.M), r.stdout
    assert snapshot(vboard.flash) == before

    with open(fw / "fieldlink" / "link" / "commands.py", "a") as f:
        f.write("\n_DEPLOY_TEST_MARK = 1\n")
    r = deploy(vboard, *args, tmp_path=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"^1 of \d+ files changed", r.stdout, re.M), r.stdout
    after = snapshot(vboard.flash)
    changed = sorted(k for k in after if after[k] != before.get(k))
    assert changed == ["fieldlink/link/commands.mpy"]
    assert set(after) == set(before)


def test_fresh_board_via_ampy(vboard, tmp_path):
    # ampy writes 32 bytes per raw-REPL round trip (about 1 KB/s): the test deploys a trimmed
    # firmware tree (run-by-name files, a package with a subpackage) to stay fast; the full
    # tree goes through the same code path.
    fw = tmp_path / "firmware"
    for rel in ("boot.py", "main.py", "fieldlink/__init__.py", "fieldlink/config.py",
                "fieldlink/ws/__init__.py"):
        if (FIRMWARE / rel).exists():
            (fw / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(FIRMWARE / rel, fw / rel)
    (vboard.flash / "fieldlink").mkdir()
    (vboard.flash / "fieldlink" / "stale.py").write_text("# from an older firmware\n")
    cfg = make_config(tmp_path / "config.json", device_id="dev-ampy")
    r = deploy(vboard, "--via", "ampy", "--config", cfg, "--firmware", fw, tmp_path=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ampy cannot compare hashes" in r.stdout
    for rel in expected_files(fw):
        assert (vboard.flash / rel).is_file(), rel
    assert not (vboard.flash / "fieldlink" / "stale.py").exists()
    assert (vboard.flash / "fieldlink" / "config.mpy").read_bytes()[:2] == b"M\x06"
    assert json.loads((vboard.flash / "config.json").read_text())["device_id"] == "dev-ampy"
    assert json.loads((vboard.flash / "board.json").read_text()) == VIRTUAL_BOARD
    assert_rebooted_after_deploy(vboard)


# ---- bad input: a clear error, and the board's flash untouched -----------------------------

@pytest.fixture
def provisioned(vboard, tmp_path):
    """A virtual board that already holds files (so 'untouched' means something)."""
    (vboard.flash / "main.py").write_text("print('old firmware')\n")
    (vboard.flash / "config.json").write_text(json.dumps({"device_id": "dev-old"}))
    return vboard


def test_unknown_board_is_refused(provisioned, tmp_path):
    before = snapshot(provisioned.flash)
    r = deploy(provisioned, tmp_path=tmp_path, board="no_such_board")
    assert r.returncode == 2
    assert "unknown board 'no_such_board'" in r.stderr and "esp32_devkitc" in r.stderr
    assert snapshot(provisioned.flash) == before


def test_config_failing_the_schema_is_refused(provisioned, tmp_path):
    before = snapshot(provisioned.flash)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"device_id": "dev-old", "token": "t", "url": "http://x/"}))
    r = deploy(provisioned, "--config", bad, tmp_path=tmp_path)
    assert r.returncode == 2
    assert "fails the firmware's schema" in r.stderr and "config.url" in r.stderr
    assert snapshot(provisioned.flash) == before


def test_board_on_another_micropython_version_is_refused(provisioned, tmp_path):
    before = snapshot(provisioned.flash)
    old = dict(VIRTUAL_BOARD, micropython=dict(VIRTUAL_BOARD["micropython"], version="1.22.2"))
    board_file = tmp_path / "old_board" / "board.json"
    board_file.parent.mkdir()
    board_file.write_text(json.dumps(old))
    r = deploy(provisioned, tmp_path=tmp_path, board=str(board_file))
    assert r.returncode == 2
    assert "runs MicroPython 1.29 but board virtual needs 1.22" in r.stderr, r.stderr
    assert snapshot(provisioned.flash) == before


def test_config_of_another_device_is_refused_unless_replacing(provisioned, tmp_path):
    before = snapshot(provisioned.flash)
    cfg = make_config(tmp_path / "config.json", device_id="dev-new")
    r = deploy(provisioned, "--config", cfg, "--reset", "none", tmp_path=tmp_path)
    assert r.returncode == 2
    assert "the board is device 'dev-old'" in r.stderr and "--replace-device" in r.stderr
    assert snapshot(provisioned.flash) == before
    r = deploy(provisioned, "--config", cfg, "--reset", "none", "--replace-device",
               tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads((provisioned.flash / "config.json").read_text())["device_id"] == "dev-new"


def test_dev_null_is_not_a_board(tmp_path):
    r = fieldlink("deploy", "--port", "/dev/null", "--board", "virtual")
    assert r.returncode == 2
    assert "/dev/null is not a serial device" in r.stderr


def test_missing_port(tmp_path):
    r = fieldlink("deploy", "--port", str(tmp_path / "ttyUSB9"), "--board", "virtual")
    assert r.returncode == 2
    assert "does not exist" in r.stderr


def test_pty_with_nothing_behind_it_is_not_a_board(tmp_path):
    master, slave = pty.openpty()
    try:
        t0 = time.monotonic()
        r = fieldlink("deploy", "--port", os.ttyname(slave), "--board", "virtual",
                      "--timeout", "2", timeout=60)
        assert r.returncode == 2
        assert "no MicroPython raw REPL answered" in r.stderr, r.stderr
        assert time.monotonic() - t0 < 60
    finally:
        os.close(master)
        os.close(slave)


# ---- unit-level: the device-id rule --------------------------------------------------------

def test_device_id_rule_uses_the_registry_of_unique_ids():
    reg = {"dev-a": {"uid": "aa01", "port": "/dev/ttyUSB0"}}
    deploy_mod.check_device_id("dev-a", {"uid": "aa01"}, reg, replace=False)   # same board
    deploy_mod.check_device_id("dev-b", {"uid": "bb02"}, reg, replace=False)   # new id
    with pytest.raises(deploy_mod.DeployError, match="already deployed to another board"):
        deploy_mod.check_device_id("dev-a", {"uid": "bb02"}, reg, replace=False)
    deploy_mod.check_device_id("dev-a", {"uid": "bb02"}, reg, replace=True)


def test_mpy_arch_names_follow_the_board():
    assert deploy_mod.mpy_arch(2822) == "x64"          # the unix port on x86-64
    assert deploy_mod.mpy_arch(6 | 3 << 8 | 10 << 10) == "xtensawin"   # ESP32
    assert deploy_mod.mpy_arch(6) is None


# ---- the board streams to a collector after the deploy ------------------------------------

@pytest.mark.skipif(not (FIRMWARE / "main.py").exists()
                    or not (ROOT / "tools" / "vboard" / "machine.py").exists(),
                    reason="needs firmware/main.py and the virtual board's machine module")
# The whole firmware through each deploy path: a fresh board, deploy, reset, readings stored.
# Through ampy (32 bytes per raw-REPL round trip) this is the suite's slowest test, ~60 s.
@pytest.mark.timeout(300)
@pytest.mark.parametrize("via", ["mpremote", "ampy"])
def test_deployed_board_streams_to_a_collector(tmp_path, via):
    from fieldlink_tools.collector.process import CollectorProcess
    with CollectorProcess(tmp_path / "c.db", {"dev-stream": "tok-stream"}) as c:
        vb = VBoard(tmp_path / "flash", tmp_path / "board.log").start()
        try:
            cfg = make_config(tmp_path / "config.json", device_id="dev-stream", url=c.url,
                              token="tok-stream")
            r = deploy(vb, "--via", via, "--config", cfg, tmp_path=tmp_path)
            assert r.returncode == 0, r.stdout + r.stderr
            seqs = c.wait_seqs("dev-stream", 3, timeout=90)
            assert seqs[:3] == [1, 2, 3]
        finally:
            vb.stop()
