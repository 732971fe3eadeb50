"""TLS on the standalone server (SERVER_TLS_CERT_PATH / SERVER_TLS_KEY_PATH)."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

import httpcore
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import RunningGateway


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(
            "127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_standalone_serves_https(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    gateway = RunningGateway("standalone", {"SERVER_TLS_CERT_PATH": str(cert),
                                            "SERVER_TLS_KEY_PATH": str(key), "IGW_DEMO": "true"},
                             tmp_path / "tls.log")
    try:
        assert gateway.wait_log("listening on https://")
        context = ssl.create_default_context(cafile=str(cert))
        with httpcore.ConnectionPool(ssl_context=context) as pool:
            response = pool.request("GET", f"https://127.0.0.1:{gateway.port}/health")
        assert response.status == 200
        with httpcore.ConnectionPool(ssl_context=context, http2=True) as pool:
            response = pool.request("GET", f"https://127.0.0.1:{gateway.port}/v1/models")
        assert response.extensions["http_version"] == b"HTTP/2"
        assert b"demo/echo" in response.content
        with pytest.raises(httpcore.RemoteProtocolError):
            httpcore.request("GET", f"http://127.0.0.1:{gateway.port}/health")
    finally:
        gateway.stop()
