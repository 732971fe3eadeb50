"""The ASGI frontend: ``igw_asgi:app`` and :func:`create_app`.

Runs under uvicorn, hypercorn and granian, and mounted in Starlette/FastAPI.
"""

from igw_io.compiled import honour_pure_python

honour_pure_python()  # before any compiled module is imported (IGW_PURE_PYTHON=1)

from igw_asgi.app import GatewayApp, app, create_app  # noqa: E402

__all__ = ["GatewayApp", "app", "create_app"]
