"""The firmware's wss:// path end to end: the virtual board streams to the collector serving
TLS with a certificate from a throwaway CA (trustme). `ca_file` on the board's flash is that
CA as PEM (the client converts it to DER when the port's mbedTLS has no PEM parser) or as DER.
A CA that did not sign the server's certificate is refused, and the board keeps retrying
through its backoff without crashing."""
import re
import ssl

import pytest
import trustme

from collector_fixtures import tls_files  # noqa: F401

DEV, TOK = "dev-1", "tok-1"


def _ca_on_flash(tmp_path, pem_path, fmt):
    flash = tmp_path / "flash"
    flash.mkdir(exist_ok=True)
    pem = pem_path.read_text()
    if fmt == "pem":
        (flash / "ca.pem").write_text(pem)
        return flash, "ca.pem"
    (flash / "ca.der").write_bytes(ssl.PEM_cert_to_DER_cert(pem))
    return flash, "ca.der"


@pytest.mark.parametrize("fmt", ["pem", "der"])
def test_streams_and_stores_over_wss(collector_proc, sim_board, tls_files, tmp_path, fmt):
    c = collector_proc({DEV: TOK}, cert=tls_files.cert, key=tls_files.key)
    assert c.url.startswith("wss://")
    flash, name = _ca_on_flash(tmp_path, tls_files.ca, fmt)
    b = sim_board(c.url, flash=flash, ca_file=name)
    try:
        seqs = c.wait_seqs(DEV, 20, timeout=60)
    except TimeoutError:
        raise AssertionError("nothing stored over wss://; board log:\n"
                             + "\n".join(b.lines()[-30:]))
    assert seqs == list(range(1, len(seqs) + 1))
    assert b.lines("INFO link: streaming to wss://")
    assert not b.lines("Traceback")


def test_wrong_ca_is_refused_and_retried_with_backoff(collector_proc, sim_board, tls_files,
                                                      tmp_path):
    c = collector_proc({DEV: TOK}, cert=tls_files.cert, key=tls_files.key)
    other = tmp_path / "other.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    flash, name = _ca_on_flash(tmp_path, other, "pem")
    base, cap = 0.2, 1.6
    b = sim_board(c.url, flash=flash, ca_file=name, backoff_base_s=base, backoff_max_s=cap)
    tries = b.wait_for_line("connect: HandshakeError", timeout=60, count=5)
    assert all("TLS" in ln for ln in tries), tries
    # full jitter: the n-th delay lies in [0, min(cap, base * 2**n)]
    delays = [float(re.search(r"retry in ([0-9.]+) s", ln).group(1)) for ln in tries]
    for n, d in enumerate(delays):
        assert 0 <= d <= min(cap, base * 2 ** n) + 0.05, (n, d, delays)
    assert b.running and not b.lines("Traceback")
    assert not b.lines("streaming to")
    assert c.seqs(DEV) == []
