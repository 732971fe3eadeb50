"""Log lines: the request id on every line of a request, secrets never written."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import Iterator

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from igw_core.config import load_settings
from igw_core.report import ExchangeRecord
from igw_core.router import AttemptFact
from igw_io.logs import (
    AccessLog,
    HumanFormatter,
    JsonFormatter,
    RequestIdFilter,
    access_fields,
    configure_logging,
    enter_request,
    request_context,
    secrets_of,
)

SECRET = 'sk-live-"quoted"\\slash-ü'


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter((SECRET,)))
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger("igw.test-logs")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_every_line_inside_a_request_carries_its_id_and_lines_outside_do_not(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    logger.info("before")

    async def serve() -> None:
        async def background() -> None:
            logger.warning("from a task the request started")

        with request_context("req-42"):
            logger.debug("inside")
            async with anyio.create_task_group() as tg:
                tg.start_soon(background)
            logger.info("explicit", extra={"request_id": "req-42"})

    anyio.run(serve)
    logger.info("after")
    out = lines(stream)
    assert [line.get("request_id") for line in out] == [None, "req-42", "req-42", "req-42",
                                                        None]


def test_concurrent_requests_keep_their_own_ids(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured

    async def one(request_id: str) -> None:
        with request_context(request_id):
            for _ in range(3):
                logger.info("step", extra={"expected": request_id})
                await anyio.sleep(0)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for request_id in ("a", "b", "c"):
                tg.start_soon(one, request_id)

    anyio.run(main)
    out = lines(stream)
    assert len(out) == 9
    assert all(line["request_id"] == line["expected"] for line in out)


def test_a_task_serving_requests_in_turn_logs_each_ones_id_and_none_between(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured

    async def connection() -> None:
        task = asyncio.current_task()
        for request_id in ("first", "second"):
            named = enter_request(task, request_id)
            logger.info("in", extra={"expected": request_id})
            # A task the request starts logs with the request's id.
            await asyncio.create_task(_log(logger, request_id))
            named.value = ""
            logger.info("between", extra={"expected": None})

    asyncio.run(connection())
    out = lines(stream)
    assert len(out) == 6
    assert all(line.get("request_id") == line["expected"] for line in out)


async def _log(logger: logging.Logger, expected: str | None) -> None:
    logger.info("from a task", extra={"expected": expected})


def test_a_task_started_by_a_serving_task_keeps_its_own_ids_apart(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    """An HTTP/2 connection started from an HTTP/1.1 one inherits the latter's context:
    its streams' ids and the starting task's must not overwrite each other."""
    logger, stream = captured
    inner_named = asyncio.Event()
    outer_moved_on = asyncio.Event()

    async def inner() -> None:
        named = enter_request(asyncio.current_task(), "stream-1")
        inner_named.set()
        await outer_moved_on.wait()
        logger.info("inner", extra={"expected": "stream-1"})
        named.value = ""

    async def outer() -> None:
        task = asyncio.current_task()
        named = enter_request(task, "h1-request")
        child = asyncio.create_task(inner())
        await inner_named.wait()
        logger.info("outer", extra={"expected": "h1-request"})
        named.value = ""
        enter_request(task, "h1-next")
        outer_moved_on.set()
        await child
        logger.info("outer again", extra={"expected": "h1-next"})

    asyncio.run(outer())
    out = lines(stream)
    assert [line["msg"] for line in out] == ["outer", "inner", "outer again"]
    assert all(line.get("request_id") == line["expected"] for line in out)


def test_json_lines_have_level_ts_msg_and_mask_secrets_even_when_escaped(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    logger.error("upstream said %s", f"bad key {SECRET}", extra={"body": {"key": SECRET}})
    text = stream.getvalue()
    assert "sk-live" not in text
    [line] = lines(stream)
    assert line["level"] == "error" and isinstance(line["ts"], str)
    assert line["msg"] == "upstream said bad key ***"
    assert line["body"] == {"key": "***"}


def test_human_lines_mask_secrets() -> None:
    record = logging.LogRecord("igw", logging.INFO, __file__, 1, "key %s", (SECRET,), None)
    record.request_id = "r1"
    line = HumanFormatter((SECRET,)).format(record)
    assert SECRET not in line and "key ***" in line and "request_id=r1" in line


def test_secrets_of_lists_provider_keys_and_the_oidc_client_secret() -> None:
    settings = load_settings({
        "OPENAI_API_KEY": "sk-a", "GROQ_API_KEY": "gsk-b", "AUTH_ENABLE": "true",
        "AUTH_OIDC_ISSUER": "https://issuer.example", "AUTH_OIDC_CLIENT_ID": "igw",
        "AUTH_OIDC_CLIENT_SECRET": "oidc-secret",
    })
    assert set(secrets_of(settings)) == {"sk-a", "gsk-b", "oidc-secret"}


_FIELD_TEXT = st.text(max_size=40)


@given(request_id=_FIELD_TEXT, path=_FIELD_TEXT, error=_FIELD_TEXT, alias=_FIELD_TEXT,
       model=_FIELD_TEXT, attempts=st.integers(0, 3), status=st.integers(100, 599),
       duration=st.floats(0, 1e6, allow_nan=False))
@settings(max_examples=200, deadline=None)
def test_access_fast_path_writes_the_line_the_logging_module_would(
    request_id: str, path: str, error: str, alias: str, model: str, attempts: int,
    status: int, duration: float,
) -> None:
    configure_logging(development=False, secrets=(SECRET,))
    handler = logging.getLogger("igw").handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    stream = io.StringIO()
    handler.setStream(stream)
    fact = AttemptFact(alias, "openai", model, "ok")
    record = ExchangeRecord(request_id=request_id, method="POST", route="/v1/chat/completions",
                            path=path + SECRET, status=status, provider="openai", model=model,
                            started=1.0, ended=1.0 + duration, error=error, alias=alias,
                            attempts=(fact,) * attempts)
    AccessLog().write(record)
    logging.getLogger("igw.access").info("request", extra=access_fields(record))
    fast, slow, _ = stream.getvalue().split("\n")
    assert SECRET not in fast
    assert fast[fast.index('"msg"'):] == slow[slow.index('"msg"'):]
    assert json.loads(fast).keys() == json.loads(slow).keys()


def test_access_line_names_the_routing_alias_only_for_a_routed_request() -> None:
    plain = ExchangeRecord(request_id="r", method="GET", route="/v1/models", path="/v1/models",
                           status=200, model="gpt-4o")
    assert "model" not in access_fields(plain) and "error" not in access_fields(plain)
    routed = ExchangeRecord(request_id="r", method="POST", route="/v1/chat/completions",
                            path="/v1/chat/completions", status=502, model="gpt-4o",
                            alias="fast", error="upstream status 502",
                            attempts=(AttemptFact("fast", "openai", "gpt-4o", "exhausted"),))
    assert access_fields(routed) == {
        "request_id": "r", "method": "POST", "path": "/v1/chat/completions", "status": 502,
        "duration_ms": 0.0, "provider": "", "model": "gpt-4o", "alias": "fast", "attempts": 1,
        "error": "upstream status 502"}


def test_access_lines_follow_a_handler_the_application_added() -> None:
    configure_logging(development=False)
    stream = io.StringIO()
    extra = logging.StreamHandler(stream)
    access = logging.getLogger("igw.access")
    access.addHandler(extra)
    try:
        AccessLog().write(ExchangeRecord(request_id="r1", method="GET", route="/health",
                                         path="/health", status=200))
    finally:
        access.removeHandler(extra)
    assert stream.getvalue() == "request\n"


def _next_second() -> None:
    """Wait until the wall clock's second changes."""
    second = int(time.time())
    while int(time.time()) == second:
        time.sleep(0.01)


def test_a_handler_added_while_serving_gets_the_access_lines_of_the_next_second() -> None:
    log, direct = _direct_access_log()
    record = _record("r1")
    log.write(record)  # no loop running: written at once, straight to igw's handler
    assert json.loads(direct.getvalue())["request_id"] == "r1"
    added = io.StringIO()
    extra = logging.StreamHandler(added)
    access = logging.getLogger("igw.access")
    access.addHandler(extra)
    try:
        _next_second()
        log.write(record)
    finally:
        access.removeHandler(extra)
    assert added.getvalue() == "request\n"


def test_access_lines_stop_within_a_second_of_the_level_going_up() -> None:
    log, out = _direct_access_log()
    record = _record("r1")
    log.write(record)
    access = logging.getLogger("igw.access")
    access.setLevel(logging.WARNING)
    try:
        _next_second()
        log.write(record)
    finally:
        access.setLevel(logging.NOTSET)
    assert len(out.getvalue().splitlines()) == 1


class _Writes(io.StringIO):
    """A stream that keeps each write apart."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


def _direct_access_log() -> tuple[AccessLog, _Writes]:
    configure_logging(development=False)
    handler = logging.getLogger("igw").handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    stream = _Writes()
    handler.setStream(stream)
    return AccessLog(), stream


def _record(request_id: str, path: str = "/health") -> ExchangeRecord:
    return ExchangeRecord(request_id=request_id, method="GET", route="/health", path=path,
                          status=200)


def test_access_lines_on_a_loop_wait_to_go_out_together() -> None:
    log, stream = _direct_access_log()

    async def serve() -> list[str]:
        for n in range(3):
            log.write(_record(f"r{n}"))
        await asyncio.sleep(0)  # an iteration later: still waiting
        before = list(stream.writes)
        await asyncio.sleep(0.2)
        return before

    assert asyncio.run(serve()) == []
    [batch] = stream.writes
    assert [json.loads(line)["request_id"] for line in batch.splitlines()] == ["r0", "r1", "r2"]


def test_each_write_holds_whole_lines_and_at_most_4_kib() -> None:
    log, stream = _direct_access_log()

    async def serve() -> None:
        for n in range(100):
            log.write(_record(f"r{n}", path="/v1/" + "x" * n))
        log.write(_record("wide", path="/v1/caf\u00e9"))
        await asyncio.sleep(0.2)

    asyncio.run(serve())
    assert len(stream.writes) > 1
    for text in stream.writes:
        assert text.endswith("\n")
        assert len(text.encode()) <= 4096
    assert stream.writes[-1] == stream.getvalue().splitlines(keepends=True)[-1]  # alone
    ids = [json.loads(line)["request_id"] for line in stream.getvalue().splitlines()]
    assert ids == [f"r{n}" for n in range(100)] + ["wide"]


def test_many_waiting_lines_go_out_without_waiting_for_the_timer() -> None:
    log, stream = _direct_access_log()

    async def serve() -> int:
        for n in range(400):  # over 64 KiB of lines
            log.write(_record(f"r{n}", path="/v1/" + "y" * 200))
        return len(stream.writes)

    assert asyncio.run(serve()) > 0


def test_after_a_flush_lines_on_another_loop_still_go_out() -> None:
    log, stream = _direct_access_log()

    async def first() -> None:
        log.write(_record("a"))  # the loop stops before its timer fires

    asyncio.run(first())
    log.flush()  # as at shutdown

    async def second() -> None:
        log.write(_record("b"))
        await asyncio.sleep(0.2)

    asyncio.run(second())
    assert [json.loads(line)["request_id"] for line in stream.getvalue().splitlines()] == [
        "a", "b"]
