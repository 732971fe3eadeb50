"""The ASGI app under the other ASGI servers operators use: hypercorn (on asyncio and on
trio) and granian."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpcore
import openai
import pytest

from tests.support.mock_provider import MockProvider, SlowStream, free_port

ROOT = Path(__file__).resolve().parents[2]
SERVERS = {
    "hypercorn": ["-m", "hypercorn", "igw_asgi:app", "--bind", "127.0.0.1:{port}"],
    "hypercorn-trio": ["-m", "hypercorn", "--worker-class", "trio", "igw_asgi:app", "--bind",
                       "127.0.0.1:{port}"],
    "granian": ["-m", "granian", "--interface", "asgi", "--host", "127.0.0.1", "--port",
                "{port}", "igw_asgi:app"],
}


@contextmanager
def asgi_server(server: str, mock: MockProvider, directory: Path) -> Iterator[int]:
    """Run the ASGI app under ``server`` with ``mock`` as OpenAI; yield its port once up."""
    for module in server.split("-"):
        pytest.importorskip(module)
    port = free_port()
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"),
           "OPENAI_API_URL": mock.base_url, "OPENAI_API_KEY": mock.api_key}
    command = [sys.executable, *(a.format(port=port) for a in SERVERS[server])]
    with open(directory / "server.log", "wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   cwd=ROOT)
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    if httpcore.request("GET", f"http://127.0.0.1:{port}/health").status == 200:
                        break
                except httpcore.NetworkError:
                    pass
                assert time.monotonic() < deadline, (directory / "server.log").read_text()
                time.sleep(0.1)
            yield port
        finally:
            process.terminate()
            process.wait(15)


@pytest.mark.parametrize("server", sorted(SERVERS))
def test_chat_and_stream_under_server(server: str, mock_openai: MockProvider,
                                      tmp_path: Path) -> None:
    with asgi_server(server, mock_openai, tmp_path) as port:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x",
                               max_retries=0)
        answer = client.chat.completions.create(
            model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "hello"}])
        assert answer.choices[0].message.content == "echo: hello"
        text = "".join(
            chunk.choices[0].delta.content or ""
            for chunk in client.chat.completions.create(
                model="openai/gpt-4o-mini", stream=True,
                messages=[{"role": "user", "content": "stream it"}])
            if chunk.choices
        )
        assert text == "echo: stream it"


@pytest.mark.parametrize("server", ["hypercorn", "hypercorn-trio"])
def test_client_disconnect_mid_stream_cancels_the_upstream_under_server(
    server: str, mock_openai: MockProvider, tmp_path: Path
) -> None:
    # ASGI tells of a disconnect only to a receive() call: the driver reads for it in a
    # task of its own (on trio, inside the request's cancel scope).
    mock_openai.script(SlowStream(delay=0.3))
    body = json.dumps({"model": "openai/gpt-4o-mini", "stream": True,
                       "messages": [{"role": "user", "content": " ".join(["w"] * 60)}]})
    with asgi_server(server, mock_openai, tmp_path) as port:
        before = mock_openai.active_connections
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall((f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                          f"Content-Type: application/json\r\nContent-Length: {len(body)}"
                          f"\r\n\r\n{body}").encode())
            assert b"200" in sock.recv(4096)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and mock_openai.active_connections > before:
            time.sleep(0.05)
        assert mock_openai.active_connections <= before
        log = tmp_path / "server.log"
        while time.monotonic() < deadline and '"status": 499' not in log.read_text():
            time.sleep(0.05)
        assert '"status": 499' in log.read_text()
