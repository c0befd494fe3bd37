"""`--transport asyncio` over HTTPS, against a raw server with a certificate made by openssl here."""

import shutil
import ssl
import subprocess

import pytest
from support_rawhttp import RawServer, answering, ask, no_asyncio_complaints, one_line_error, right  # noqa: F401


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command to make a certificate")
    where = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", where / "key.pem", "-out", where / "cert.pem"], check=True, capture_output=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(where / "cert.pem", where / "key.pem")
    return ctx, where / "cert.pem"


def test_https_with_a_trusted_certificate(tmp_path, monkeypatch, self_signed):
    ctx, cert = self_signed
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # what OpenSSL's default verify paths read
    with RawServer(answering(), tls=ctx) as srv:
        got, stats = ask(tmp_path, srv.url, count=3)
    assert all(right(g, i) for i, g in enumerate(got)) and srv.accepted == 1


def test_https_with_an_untrusted_certificate_is_a_connection_error(tmp_path, self_signed):
    ctx, _ = self_signed
    with RawServer(answering(), tls=ctx) as srv:
        got, _ = ask(tmp_path, srv.url)
    assert one_line_error(got[0]) and got[0].detail.startswith("connection error:")
    assert "CERTIFICATE_VERIFY_FAILED" in got[0].detail
