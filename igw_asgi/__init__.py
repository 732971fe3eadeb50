"""The ASGI frontend: ``igw_asgi:app`` and :func:`create_app`.

Runs under uvicorn, hypercorn and granian, and mounted in Starlette/FastAPI.
"""

from igw_asgi.app import GatewayApp, app, create_app

__all__ = ["GatewayApp", "app", "create_app"]
