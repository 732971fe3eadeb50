"""TLS on the standalone server (SERVER_TLS_CERT_PATH / SERVER_TLS_KEY_PATH)."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpcore
import pytest

from tests.conftest import RunningGateway
from tests.support.certs import self_signed


def test_standalone_serves_https(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
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
