"""TLS for wss:// (RFC 6455 §4.1, §10.6): the client's SSL context, which verifies the server's
certificate and hostname. Loaded by opening.py only for wss:// and dropped with it."""

from .errors import WSError


def context(ca_file):
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # verify the server by default; hostname checked too (MicroPython's SSLContext has
    # verify_mode, its stubs do not)
    ctx.verify_mode = ssl.CERT_REQUIRED  # type: ignore[attr-defined]
    if ca_file:
        try:
            ctx.load_verify_locations(cafile=ca_file)
        except ValueError:
            # mbedTLS built without PEM parsing (the unix port): load each certificate as DER
            for der in _pem_certs(ca_file):
                ctx.load_verify_locations(cadata=der)
    elif hasattr(ctx, "load_default_certs"):
        ctx.load_default_certs()
    else:
        raise WSError("wss:// needs ca_file: this port has no system CA store")
    return ctx


def _pem_certs(path):
    import binascii
    with open(path, "rb") as f:
        pem = f.read()
    certs = []
    b64 = []  # type: list[bytes]
    inside = False
    for line in pem.split(b"\n"):
        line = line.strip()
        if line == b"-----BEGIN CERTIFICATE-----":
            b64 = []
            inside = True
        elif line == b"-----END CERTIFICATE-----" and inside:
            certs.append(binascii.a2b_base64(b"".join(b64)))
            inside = False
        elif inside:
            b64.append(line)
    if not certs:
        raise WSError("no PEM certificate in %s" % path)
    return certs


def is_tls_error(e):
    """An exception from the TLS layer (CPython's ssl.SSLError; MicroPython has none)."""
    try:
        import ssl
        return isinstance(e, getattr(ssl, "SSLError", ()))
    except ImportError:
        return False
