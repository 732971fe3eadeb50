"""A Starlette app that mounts igw under ``/gateway``, the way operators embed it."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from igw_asgi import create_app

gateway = create_app()


async def home(request: object) -> PlainTextResponse:
    return PlainTextResponse("host app")


app = Starlette(
    routes=[Route("/", home), Mount("/gateway", app=gateway)],
    lifespan=gateway.lifespan,
)
