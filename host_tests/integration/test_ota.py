"""Firmware updates over the link (docs/ota.md) on the virtual board against a real collector:
an update pushed over ws:// and wss:// is streamed on after the reboot and the collector shows
the version change; a bad signature, a wrong hash, a bundle too big for the flash are refused
with the old firmware untouched; a new version that crashes on import, and one that cannot
connect, are rolled back on their own and the server is told why."""
import os
import shutil

import pytest

from fieldlink_tools import ota as tool
from fieldlink_tools.soak import TLSFiles

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
