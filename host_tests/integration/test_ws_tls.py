"""wss:// with a CA made in the test (trustme): the right CA is accepted; a wrong CA and a
wrong hostname are refused. On MicroPython (mbedTLS: server_hostname is checked) and CPython."""
import ssl
import sys
from pathlib import Path

import pytest
import trustme

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ws_support as S  # noqa: E402

pytestmark = pytest.mark.micropython
INTERPS = ["micropython", "cpython"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca = trustme.CA(key_type=trustme.KeyType.RSA)
    other = trustme.CA()  # ECDSA: both key types load on MicroPython
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    other.cert_pem.write_to_path(str(d / "other.pem"))

    def server_ctx(name):
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(name).configure_cert(ctx)
        return ctx
    return {"ca": str(d / "ca.pem"), "other": str(d / "other.pem"), "server_ctx": server_ctx}


async def echo(ws):
    async for m in ws:
        await ws.send(m)


@pytest.fixture(scope="module")
def good_server(pki):
    with S.websockets_server(echo, ssl=pki["server_ctx"]("localhost")) as srv:
        yield srv


@pytest.fixture(scope="module")
def misnamed_server(pki):
    with S.websockets_server(echo, ssl=pki["server_ctx"]("not-this-host.example")) as srv:
        yield srv


@pytest.mark.parametrize("interp", INTERPS)
def test_right_ca_and_hostname_accepted(good_server, pki, interp):
    lines = S.run_client("connect_only", {"url": "wss://localhost:%d/" % good_server.port,
                                          "opts": {"ca_file": pki["ca"]},
                                          "report_opening": True}, interp=interp)
    assert lines == [{"step": "connect", "exc": None, "subprotocol": None},
                     {"step": "opening_left", "mods": []},  # tls.py dropped with the rest
                     {"step": "echo", "text": "hi"}]


@pytest.mark.parametrize("interp", INTERPS)
def test_wrong_ca_refused(good_server, pki, interp):
    lines = S.run_client("connect_only", {"url": "wss://localhost:%d/" % good_server.port,
                                          "opts": {"ca_file": pki["other"]}}, interp=interp)
    assert len(lines) == 1
    assert lines[0]["exc"] == "HandshakeError" and "status" not in lines[0], lines
    assert lines[0]["reason"].startswith("TLS"), lines


@pytest.mark.parametrize("interp", INTERPS)
def test_wrong_hostname_refused(misnamed_server, pki, interp):
    # the certificate is signed by the trusted CA, but for another name
    lines = S.run_client("connect_only", {"url": "wss://localhost:%d/" % misnamed_server.port,
                                          "opts": {"ca_file": pki["ca"]}}, interp=interp)
    assert len(lines) == 1
    assert lines[0]["exc"] == "HandshakeError" and lines[0]["reason"].startswith("TLS"), lines


def test_wss_without_ca_file_refused_on_micropython(good_server):
    # no CA store on the board: refusing beats connecting unverified
    lines = S.run_client("connect_only", {"url": "wss://localhost:%d/" % good_server.port})
    assert lines[0]["exc"] == "WSError" and "ca_file" in lines[0]["msg"], lines
