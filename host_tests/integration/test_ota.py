"""Firmware updates over the link (docs/ota.md) on the virtual board against a real collector:
an update pushed over ws:// and wss:// is streamed on after the reboot and the collector shows
the version change; a bad signature, a wrong hash, a bundle too big for the flash are refused
with the old firmware untouched; a new version that crashes on import, and one that cannot
connect, are rolled back on their own and the server is told why."""
import base64
import os
import secrets
import shutil
import sys
from pathlib import Path

import pytest

from fieldlink_tools import ota as tool
from fieldlink_tools.collector.server import Collector
from fieldlink_tools.collector.store import SQLiteStore
from fieldlink_tools.soak import TLSFiles

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ws_support as S  # noqa: E402

DEV = "dev-1"
KEY = "test-ota-key-0123456789"


@pytest.fixture(scope="module")
def bundle():
    """The package as deploy builds it (compiled once for the module)."""
    return tool.build_bundle(version="9.9.9-test")[1]


def push(c, files, version, key=KEY, ca=None, tamper=None, devices=(DEV,)):
    man = tool.manifest(files, version, key.encode())
    if tamper:
        tamper(man)
    admin = tool.Admin(c.http_url, c.admin_token, ca=ca)
    try:
        tool.push(admin, files, man, list(devices))
    finally:
        admin.close()
    return man


def history(c, dev=DEV):
    st = c.store()
    try:
        return st.ota_history(dev)
    finally:
        st.close()


def wait_state(c, oid, states, timeout=90):
    def done(st):
        rows = [r for r in st.ota_history(DEV) if r["offer"] == oid]
        return rows[-1] if rows and rows[-1]["state"] in states else None
    return c.wait_for(done, timeout, what="ota state %s" % (states,))


def fw_of(c):
    st = c.store()
    try:
        return {d["device"]: (d["hello"] or {}).get("fw") for d in st.devices()}.get(DEV)
    finally:
        st.close()


def stored(c):
    st = c.store()
    try:
        return len(st.readings(DEV))
    finally:
        st.close()


def tree(flash):
    """Every file under the flash's fw/ and fieldlink/ with its bytes (old firmware intact?)."""
    out = {}
    for top in ("fw", "fieldlink"):
        for root, _, names in os.walk(os.path.join(flash, top)):
            for n in names:
                p = os.path.join(root, n)
                with open(p, "rb") as f:
                    out[os.path.relpath(p, flash)] = f.read()
    return out


def _board(sim_board, c, tmp_path, scheme, tls=None, **cfg):
    on_flash = {}
    if tls is not None:
        flash = tmp_path / "flash-tls"
        flash.mkdir()
        shutil.copyfile(tls.ca, flash / "ca.pem")
        on_flash = {"flash": flash, "ca_file": "ca.pem"}
    b = sim_board("%s://127.0.0.1:%d/ws" % (scheme, c.port), ota_key=KEY, **dict(on_flash,
                                                                                   **cfg))
    c.wait_seqs(DEV, 5, timeout=60)
    return b


@pytest.mark.parametrize("scheme", ["ws", "wss"])
def test_update_is_streamed_on_and_the_collector_shows_the_version(
        collector_proc, sim_board, tmp_path, bundle, scheme):
    tls = TLSFiles(str(tmp_path / "tls")) if scheme == "wss" else None
    c = collector_proc({DEV: "tok-1"}, **({"cert": tls.cert, "key": tls.key} if tls else {}))
    b = _board(sim_board, c, tmp_path, scheme, tls)
    old = fw_of(c)
    man = push(c, bundle, "2.0.0-" + scheme, ca=tls.ca if tls else None)
    row = wait_state(c, man["id"], ("confirmed", "refused", "rolled_back"))
    assert row["state"] == "confirmed", (history(c), b.lines()[-40:])
    states = [r["state"] for r in history(c) if r["offer"] == man["id"]]
    assert states[:3] == ["offered", "accepted", "receiving"], states
    assert "staged" in states and "trial" in states
    assert fw_of(c) == "2.0.0-" + scheme != old
    n = stored(c)
    c.wait_seqs(DEV, n + 10, timeout=60)          # streams on the new version
    assert b.lines("fieldlink 2.0.0-%s device" % scheme)
    flash = b.flash
    with open(os.path.join(flash, "fw", "current")) as f:
        assert f.read().strip() == "2.0.0-" + scheme
    assert not os.path.exists(os.path.join(flash, "fw", "trial"))
    assert not b.lines("Traceback")
    assert KEY not in b.text() and KEY not in c.log()   # a secret, like the token


def _no_update_left(b):
    """The old firmware untouched: no version staged or on trial, it streams as before."""
    fw = os.path.join(b.flash, "fw")
    left = [n for n in (os.listdir(fw) if os.path.isdir(fw) else ())
            if n not in ("current", "tries")]
    assert not left, left


def test_bad_signature_is_refused_and_nothing_changes(collector_proc, sim_board, tmp_path,
                                                      bundle):
    c = collector_proc({DEV: "tok-1"})
    b = _board(sim_board, c, tmp_path, "ws")
    before = tree(b.flash)
    man = push(c, bundle, "2.1.0", key="not-the-devices-key-at-all")
    row = wait_state(c, man["id"], ("refused", "confirmed", "rolled_back"))
    assert row["state"] == "refused" and row["reason"] == "bad signature", row
    assert tree(b.flash) == before
    n = stored(c)
    c.wait_seqs(DEV, n + 5, timeout=60)
    assert fw_of(c) != "2.1.0"


def _used(flash, bs=4096):
    # what tools/vboard/_vflash.py counts
    n = bs
    for e in os.scandir(flash):
        n += _used(e.path) if e.is_dir() else (e.stat().st_size + bs - 1) // bs * bs
    return n


def test_a_bundle_too_big_for_the_flash_is_refused(collector_proc, sim_board, tmp_path, bundle):
    c = collector_proc({DEV: "tok-1"})
    b = _board(sim_board, c, tmp_path, "ws", flash_bytes=10 ** 9)
    b.stop()
    size = sum(len(d) for _, d in bundle)
    # room for the outbox's reserve and a margin, but only half the bundle
    b.env["FIELDLINK_VBOARD_FLASH_BYTES"] = str(_used(b.flash) + 65536 + 8 * 4096 + size // 2)
    b.start()
    b.wait_for_line("streaming to", timeout=60, count=2)
    before = tree(b.flash)
    man = push(c, bundle, "2.2.0")
    row = wait_state(c, man["id"], ("refused", "confirmed", "rolled_back"))
    assert row["state"] == "refused" and row["reason"].startswith("too big"), row
    assert tree(b.flash) == before
    _no_update_left(b)


def _source_bundle(files, replace):
    """The bundle with some modules replaced by source (path.py for path.mpy)."""
    out = [(p, d) for p, d in files if p[:-4] + ".py" not in replace]
    return out + sorted((p, t.encode()) for p, t in replace.items())


def test_a_new_version_that_crashes_on_import_is_rolled_back(collector_proc, sim_board,
                                                             tmp_path, bundle):
    c = collector_proc({DEV: "tok-1"})
    b = _board(sim_board, c, tmp_path, "ws")
    old = fw_of(c)
    broken = _source_bundle(bundle, {"fieldlink/app.py": "raise RuntimeError('broken build')\n"})
    man = push(c, broken, "2.3.0")
    row = wait_state(c, man["id"], ("confirmed", "refused", "rolled_back"), timeout=120)
    assert row["state"] == "rolled_back", (history(c), b.lines()[-40:])
    assert "crashed: RuntimeError: broken build" in row["reason"], row
    assert fw_of(c) == old
    n = stored(c)
    c.wait_seqs(DEV, n + 5, timeout=60)
    _no_update_left(b)


def test_a_new_version_that_cannot_connect_is_rolled_back(collector_proc, sim_board, tmp_path,
                                                          bundle):
    c = collector_proc({DEV: "tok-1"})
    b = _board(sim_board, c, tmp_path, "ws", ota_trial_s=6)
    old = fw_of(c)
    broken = _source_bundle(bundle, {"fieldlink/link/hello.py": (
        "async def run(*a):\n    raise OSError('this build cannot connect')\n")})
    man = push(c, broken, "2.4.0")
    row = wait_state(c, man["id"], ("confirmed", "refused", "rolled_back"), timeout=120)
    assert row["state"] == "rolled_back", (history(c), b.lines()[-40:])
    assert row["reason"] == "no connection with readings acked within 6 s", row
    assert b.lines("cannot connect")
    assert fw_of(c) == old
    n = stored(c)
    c.wait_seqs(DEV, n + 5, timeout=60)
    _no_update_left(b)


class InProcess:
    """The collector in this process (a loop thread), so a test can change what it serves:
    .port, .http_url, .admin_token, .collector, .call(fn) runs fn on its loop; .store()."""

    def __init__(self, db):
        self.db = str(db)
        self.admin_token = secrets.token_hex(16)
        self.lt = S.LoopThread(self._serve)

    async def _serve(self, lt):
        store = SQLiteStore(self.db)
        self.collector = Collector(store, {DEV: "tok-1"}, admin_token=self.admin_token)
        await self.collector.start()
        self.port = self.collector.port
        self.http_url = self.collector.http_url
        lt.ready(self.port)
        try:
            await lt.wait_stop()
        finally:
            await self.collector.stop()
            store.close()

    def call(self, fn):
        import concurrent.futures
        f = concurrent.futures.Future()

        def run():
            try:
                f.set_result(fn())
            except Exception as e:
                f.set_exception(e)
        self.lt.loop.call_soon_threadsafe(run)
        return f.result(10)

    def store(self):
        from fieldlink_tools.collector.store import open_readonly
        return open_readonly(self.db)

    def wait_for(self, predicate, timeout=30, what="condition"):
        import time
        deadline = time.monotonic() + timeout
        while True:
            st = self.store()
            try:
                got = predicate(st)
            finally:
                st.close()
            if got:
                return got
            if time.monotonic() > deadline:
                raise TimeoutError("no %s within %ss" % (what, timeout))
            time.sleep(0.1)

    def wait_seqs(self, device, count, timeout=30):
        return self.wait_for(lambda st: len(st.readings(device)) >= count, timeout,
                             "%d readings" % count)


def test_a_wrong_hash_is_refused_and_nothing_changes(sim_board, tmp_path, bundle):
    """A collector that serves other bytes than the signed manifest names (broken or
    hostile): the board checks every file's SHA-256 before the switch and refuses."""
    c = InProcess(tmp_path / "inproc.db")
    with c.lt:
        b = _board(sim_board, c, tmp_path, "ws")
        before = tree(b.flash)
        man = tool.manifest(bundle, "2.5.0", KEY.encode())
        admin = tool.Admin(c.http_url, c.admin_token)
        try:
            for p, d in bundle:
                admin.call({"op": "ota_file", "id": man["id"], "path": p,
                            "data": base64.b64encode(d).decode()})
            # the bundle is accepted, then its last file changes in the collector's memory
            admin.call({"op": "ota", "manifest": man, "devices": ["other"]})

            def corrupt():
                bd = c.collector.ota.bundles[man["id"]]
                d = bytearray(bd.data[-1])
                d[len(d) // 2] ^= 0xFF
                bd.data[-1] = bytes(d)
            c.call(corrupt)
            admin.call({"op": "ota", "manifest": man, "devices": [DEV]})
        finally:
            admin.close()
        row = wait_state(c, man["id"], ("refused", "confirmed", "rolled_back"))
        assert row["state"] == "refused", row
        assert row["reason"] == "sha256 mismatch: %s" % bundle[-1][0], row
        assert tree(b.flash) == before
        _no_update_left(b)
        c.wait_seqs(DEV, stored(c) + 5, timeout=60)
        b.stop()


def test_power_cuts_at_random_points_of_updates_never_brick(collector_proc, sim_board,
                                                            fault_proxy, tmp_path, bundle):
    """The seeded power-cut campaign (more runs: python -m fieldlink_tools.ota_campaign)."""
    from fieldlink_tools import ota_campaign
    from fieldlink_tools.soak import final_audit
    c = collector_proc({DEV: "tok-1"})
    fp = fault_proxy(c.port)
    b = sim_board("ws://127.0.0.1:%d/ws" % fp.port, ota_key=KEY, sample_interval_s=0.2)
    c.wait_seqs(DEV, 5, timeout=60)
    res = ota_campaign.run(c, b, bundle, KEY.encode(), runs=13, seed=1515, say=lambda s: None)
    assert len([r for r in res if r[2] is not None]) == 12
    assert all(r[3] == "confirmed" for r in res)
    a = final_audit(c, fp, {DEV: b}, timeout=60)[DEV]
    assert a.ok, "%r\nboard log tail:\n%s" % (a, "\n".join(b.lines()[-40:]))
    assert a.duplicates == 0 and a.lost_undeclared == 0
    assert [g for g in a.gaps if g["why"] == "reboot"]   # the cuts were declared


def test_the_cli_pushes_with_the_admin_token_from_the_environment(collector_proc, sim_board,
                                                                  tmp_path):
    """`fieldlink ota push`: the key from a file, the admin token from the environment (a
    viewer's token is refused), --wait reports the final state."""
    import subprocess
    c = collector_proc({DEV: "tok-1"})
    _board(sim_board, c, tmp_path, "ws")
    keyfile = tmp_path / "ota.key"
    keyfile.write_text(KEY + "\n")
    argv = [sys.executable, "-m", "fieldlink_tools.cli", "ota", "push", "--device", DEV,
            "--key", str(keyfile), "--server", c.http_url, "--version", "3.0.0-cli",
            "--wait", "120"]
    env = dict(os.environ, FIELDLINK_ADMIN_TOKEN=c.viewer_token)
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "403" in r.stderr + r.stdout, r
    env["FIELDLINK_ADMIN_TOKEN"] = c.admin_token
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r
    assert "%s: confirmed" % DEV in r.stdout, r.stdout
    assert c.admin_token not in r.stdout + r.stderr
    assert fw_of(c) == "3.0.0-cli"
