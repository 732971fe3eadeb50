"""The keep-alive pool against a real HTTP server: reuse, limits, stale connections."""

from __future__ import annotations

import anyio
import httpcore
import pytest

from igw_io.pool import KeepAlivePool
from tests.support.mock_provider import MockProvider


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _request(mock: MockProvider) -> httpcore.Request:
    url = httpcore.URL(mock.base_url + "/models")
    return httpcore.Request("GET", url, headers=[
        (b"host", f"127.0.0.1:{mock.port}".encode()),
        (b"authorization", f"Bearer {mock.api_key}".encode()),
    ])


async def _get(pool: KeepAlivePool, mock: MockProvider) -> int:
    response = await pool.handle_async_request(_request(mock))
    try:
        async for _ in response.aiter_stream():
            pass
    finally:
        await response.aclose()
    return response.status


@pytest.mark.anyio
async def test_sequential_requests_reuse_one_connection(mock_openai: MockProvider) -> None:
    pool = KeepAlivePool(max_idle=10, max_idle_per_host=10, keepalive_expiry=30)
    for _ in range(5):
        assert await _get(pool, mock_openai) == 200
    assert mock_openai.connections_accepted == 1
    assert pool.idle_connections == 1
    await pool.aclose()


@pytest.mark.anyio
async def test_idle_connections_are_capped_per_host(mock_openai: MockProvider) -> None:
    pool = KeepAlivePool(max_idle=10, max_idle_per_host=2, keepalive_expiry=30)
    async with anyio.create_task_group() as tg:
        for _ in range(6):
            tg.start_soon(_get, pool, mock_openai)
    assert mock_openai.connections_accepted == 6
    assert pool.idle_connections == 2
    await pool.aclose()
    assert pool.idle_connections == 0


@pytest.mark.anyio
async def test_a_connection_the_server_closed_is_not_reused(mock_openai: MockProvider) -> None:
    pool = KeepAlivePool(max_idle=10, max_idle_per_host=10, keepalive_expiry=30)
    assert await _get(pool, mock_openai) == 200
    port = mock_openai.port
    mock_openai.stop()  # closes every connection, the pooled one included
    restarted = MockProvider(port=port, api_key=mock_openai.api_key).start()
    try:
        await anyio.sleep(0.05)
        assert await _get(pool, restarted) == 200
        assert restarted.connections_accepted == 1
    finally:
        restarted.stop()
        await pool.aclose()


@pytest.mark.anyio
async def test_an_unread_response_does_not_return_its_connection(
    mock_openai: MockProvider,
) -> None:
    pool = KeepAlivePool(max_idle=10, max_idle_per_host=10, keepalive_expiry=30)
    response = await pool.handle_async_request(_request(mock_openai))
    await response.aclose()  # body never read: the connection cannot be reused
    assert pool.idle_connections == 0
    await pool.aclose()
