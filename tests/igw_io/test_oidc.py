"""OIDCKeys against a real issuer over HTTP: loading, rotation, rate limiting, outages, mismatch."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterator

import anyio
import pytest

from igw_core.auth import AuthFailure, AuthReason, KeySet, verify_bearer
from igw_io.oidc import OIDCKeys, discovery_url
from tests.support.oidc_issuer import OIDCIssuer


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def idp() -> Iterator[OIDCIssuer]:
    with OIDCIssuer(keys=("RSA", "EC")) as issuer:
        yield issuer


@pytest.fixture
def auth_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    # The "igw" logger stops propagation once a frontend configured it; let caplog see it.
    logger = logging.getLogger("igw")
    propagate = logger.propagate
    logger.propagate = True
    with caplog.at_level(logging.DEBUG, logger="igw.auth"):
        yield caplog
    logger.propagate = propagate


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def verify(token: str, keys: KeySet | None, idp: OIDCIssuer) -> dict[str, object]:
    return verify_bearer(
        b"Bearer " + token.encode(), keys, issuer=idp.issuer, audience=idp.client_id,
        now=time.time(),
    )


def test_discovery_url_strips_one_trailing_slash() -> None:
    expected = "https://a/realms/x/.well-known/openid-configuration"
    assert discovery_url("https://a/realms/x") == expected
    assert discovery_url("https://a/realms/x/") == expected


@pytest.mark.anyio
async def test_loads_keys_from_discovery_and_jwks(idp: OIDCIssuer) -> None:
    keys = OIDCKeys(idp.issuer)
    try:
        assert keys.current() is None
        loaded = await keys.ensure()
        assert loaded is not None
        assert loaded is keys.current()
        assert set(loaded.kids) == {k.kid for k in idp.keys}
        assert idp.discovery_requests == 1
        assert idp.jwks_requests == 1
        for key in idp.keys:
            assert verify(idp.mint(key=key), loaded, idp)["sub"] == "user-1"
        assert await keys.ensure() is loaded  # loaded once; no more fetches
        assert idp.jwks_requests == 1
    finally:
        await keys.aclose()


@pytest.mark.anyio
async def test_skips_unusable_jwks_entries(idp: OIDCIssuer) -> None:
    idp.extra_jwks.append({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"})
    idp.add_key("RSA", kid="enc-key", use="enc")
    keys = OIDCKeys(idp.issuer)
    try:
        loaded = await keys.ensure()
        assert loaded is not None
        assert "hmac" not in loaded.kids and "enc-key" not in loaded.kids
        assert len(loaded) == 2
    finally:
        await keys.aclose()


@pytest.mark.anyio
async def test_rotation_is_picked_up_through_refresh_for_kid(idp: OIDCIssuer) -> None:
    clock = FakeClock()
    keys = OIDCKeys(idp.issuer, clock=clock)
    try:
        before = await keys.ensure()
        new = idp.rotate("OKP", kid="k2")
        token = idp.mint(key=new)
        with pytest.raises(AuthFailure) as info:
            verify(token, before, idp)
        assert info.value.reason is AuthReason.UNKNOWN_KID
        assert info.value.kid == "k2"

        clock.now += 10.0  # the refetch window since the first load has passed
        after = await keys.refresh_for_kid("k2")
        assert after is not None and after.kids == ("k2",)
        assert verify(token, after, idp)["sub"] == "user-1"
        assert keys.current() is after
        # A refetch for a kid that is now known costs nothing.
        assert await keys.refresh_for_kid("k2") is after
        assert idp.jwks_requests == 2
        assert idp.discovery_requests == 1  # jwks_uri is remembered
    finally:
        await keys.aclose()


@pytest.mark.anyio
async def test_flood_of_random_kids_costs_at_most_one_jwks_request_per_window(
    idp: OIDCIssuer,
) -> None:
    clock = FakeClock()
    keys = OIDCKeys(idp.issuer, clock=clock, refetch_window=10.0)
    try:
        await keys.ensure()
        assert idp.jwks_requests == 1
        clock.now += 10.0
        idp.jwks_delay = 0.2  # so the 50 calls overlap the one fetch
        results: list[KeySet | None] = []

        async def one() -> None:
            results.append(await keys.refresh_for_kid(secrets.token_hex(8)))

        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(one)
        assert idp.jwks_requests == 2
        assert len(results) == 50 and all(r is not None for r in results)

        idp.jwks_delay = 0.0
        clock.now += 9.9  # still inside the window
        for _ in range(50):
            await keys.refresh_for_kid(secrets.token_hex(8))
        assert idp.jwks_requests == 2

        clock.now += 0.1  # the window is over: one more fetch is allowed
        await keys.refresh_for_kid(secrets.token_hex(8))
        await keys.refresh_for_kid(secrets.token_hex(8))
        assert idp.jwks_requests == 3
    finally:
        await keys.aclose()


@pytest.mark.anyio
async def test_a_caller_that_gives_up_does_not_abort_the_shared_fetch(idp: OIDCIssuer) -> None:
    keys = OIDCKeys(idp.issuer)
    idp.jwks_delay = 0.3
    try:
        with anyio.move_on_after(0.05):
            await keys.refresh_for_kid("k-new")
        assert keys.current() is not None  # the shielded fetch finished anyway
    finally:
        await keys.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("how", ["refuse", "503"])
async def test_issuer_down_at_start_then_up_run_loads_keys(
    idp: OIDCIssuer, how: str, auth_logs: pytest.LogCaptureFixture
) -> None:
    idp.down(how)  # type: ignore[arg-type]
    keys = OIDCKeys(idp.issuer, initial_backoff=0.02, max_backoff=0.05, timeout=1.0)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(keys.run)
            await anyio.sleep(0.2)
            assert keys.current() is None
            assert await keys.ensure() is None  # still down; rate-limited, never raises
            idp.up()
            with anyio.fail_after(3):
                while keys.current() is None:
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
        loaded = keys.current()
        assert loaded is not None
        assert verify(idp.mint(), loaded, idp)["sub"] == "user-1"
    finally:
        await keys.aclose()
    failures = [r for r in auth_logs.records if r.getMessage() == "oidc keys fetch failed"]
    assert len(failures) >= 2  # retried with backoff, each failure logged
    error: str = failures[0].error  # type: ignore[attr-defined]
    assert discovery_url(idp.issuer) in error
    assert ("HTTP 503" if how == "503" else "ConnectError") in error
    assert any(r.getMessage() == "oidc keys loaded" for r in auth_logs.records)


@pytest.mark.anyio
async def test_run_refreshes_periodically_so_rotation_needs_no_restart(idp: OIDCIssuer) -> None:
    keys = OIDCKeys(idp.issuer, refresh_interval=0.05)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(keys.run)
            with anyio.fail_after(3):
                while keys.current() is None:
                    await anyio.sleep(0.01)
            new = idp.rotate("EC", kid="rotated")
            with anyio.fail_after(3):
                while (current := keys.current()) is None or "rotated" not in current.kids:
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
        current = keys.current()
        assert current is not None and current.kids == ("rotated",)
        assert verify(idp.mint(key=new), current, idp)["sub"] == "user-1"
    finally:
        await keys.aclose()


@pytest.mark.anyio
async def test_failed_refresh_keeps_the_old_keys(idp: OIDCIssuer) -> None:
    clock = FakeClock()
    keys = OIDCKeys(idp.issuer, clock=clock, timeout=1.0)
    try:
        loaded = await keys.ensure()
        assert loaded is not None
        idp.down("503")
        clock.now += 10.0
        assert await keys.refresh_for_kid("unknown") is loaded
        assert keys.current() is loaded
        assert keys.last_error is not None and "HTTP 503" in keys.last_error
    finally:
        await keys.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("advertised", ["{issuer}/", "https://idp.example.com/realms/test"])
async def test_issuer_mismatch_in_discovery_is_not_ready(
    idp: OIDCIssuer, advertised: str, auth_logs: pytest.LogCaptureFixture
) -> None:
    idp.advertised_issuer = advertised.format(issuer=idp.issuer)
    keys = OIDCKeys(idp.issuer)
    try:
        assert await keys.ensure() is None
        assert keys.current() is None
        assert idp.jwks_requests == 0
    finally:
        await keys.aclose()
    (line,) = [r for r in auth_logs.records if r.getMessage() == "oidc discovery issuer mismatch"]
    assert line.levelno == logging.ERROR
    assert repr(idp.issuer) in line.error  # type: ignore[attr-defined]
    assert repr(idp.advertised_issuer) in line.error  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_configured_issuer_with_trailing_slash_is_not_ready(
    idp: OIDCIssuer, auth_logs: pytest.LogCaptureFixture
) -> None:
    # Discovery is found (one slash stripped) but names the issuer without the slash.
    keys = OIDCKeys(idp.issuer + "/")
    try:
        assert await keys.ensure() is None
        assert idp.discovery_requests == 1
    finally:
        await keys.aclose()
    assert any("must be equal byte for byte" in getattr(r, "error", "")
               for r in auth_logs.records)


@pytest.mark.anyio
async def test_oversized_jwks_is_refused(idp: OIDCIssuer) -> None:
    for _ in range(3):
        idp.add_key("RSA")
    keys = OIDCKeys(idp.issuer, max_bytes=1500)
    try:
        assert await keys.ensure() is None
        assert keys.last_error is not None and "larger than 1500 bytes" in keys.last_error
    finally:
        await keys.aclose()


@pytest.mark.anyio
async def test_slow_issuer_times_out(idp: OIDCIssuer) -> None:
    idp.jwks_delay = 1.0
    keys = OIDCKeys(idp.issuer, timeout=0.1)
    try:
        with anyio.fail_after(2):
            assert await keys.ensure() is None
        assert keys.last_error is not None and idp.jwks_uri in keys.last_error
    finally:
        await keys.aclose()


@pytest.mark.anyio
async def test_ensure_is_rate_limited_while_the_issuer_is_down(idp: OIDCIssuer) -> None:
    clock = FakeClock()
    idp.down("503")
    keys = OIDCKeys(idp.issuer, clock=clock)
    try:
        for _ in range(20):
            assert await keys.ensure() is None
        assert idp.discovery_requests == 1
        clock.now += 10.0
        idp.up()
        assert await keys.ensure() is not None
        assert idp.discovery_requests == 2
    finally:
        await keys.aclose()


@pytest.mark.anyio
async def test_credentials_in_the_issuer_url_are_never_logged(
    idp: OIDCIssuer, auth_logs: pytest.LogCaptureFixture
) -> None:
    idp.down("503")
    issuer = idp.issuer.replace("http://", "http://user:hunter2@")
    keys = OIDCKeys(issuer)
    try:
        await keys.ensure()
    finally:
        await keys.aclose()
    assert auth_logs.records
    for record in auth_logs.records:
        assert "hunter2" not in str(getattr(record, "error", "")) + record.getMessage()
