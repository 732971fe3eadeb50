# syntax=docker/dockerfile:1
# igw, the inference gateway, as a container image (docs/deploy.md).
#
#   docker build -t igw .
#   docker run --rm -p 8080:8080 -e OPENAI_API_KEY=sk-... igw
#   docker run --rm -p 8080:8080 igw --demo        # arguments go to `igw`
#
# Two stages: the builder turns the project and every dependency into wheels, the
# runtime installs only those wheels into a slim image, without build tools or sources.
# Keep both stages on the same Python, so compiled wheels (igw's own, httptools,
# uvloop) match.

FROM python:3.12-slim AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
# A C compiler, so the project's wheel has its request path compiled (mypyc, setup.py).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md LICENSE ./
COPY igw_core ./igw_core
COPY igw_io ./igw_io
COPY igw_asgi ./igw_asgi
COPY igw_standalone ./igw_standalone
# The project's wheel first, then the wheels of its dependencies (versions as
# pyproject.toml allows, resolved at build time).
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && pip wheel --no-cache-dir --wheel-dir /wheels --find-links /wheels /wheels/igw-*.whl

FROM python:3.12-slim
LABEL org.opencontainers.image.title="igw" \
      org.opencontainers.image.description="igw: an OpenAI-compatible LLM inference gateway" \
      org.opencontainers.image.licenses="MIT"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
# Only wheels, from the builder; no index is asked, so nothing else comes in.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index /wheels/*.whl

# The image's defaults; every other setting comes from the environment (README.md,
# "Configuration"). SERVER_HOST=0.0.0.0 so the published port reaches the gateway.
ENV SERVER_HOST=0.0.0.0 \
    SERVER_PORT=8080
# The API port; with TELEMETRY_ENABLE=true, /metrics is served on 9464.
EXPOSE 8080 9464

# A numeric user, so Kubernetes' runAsNonRoot can check it without /etc/passwd.
USER 10001:10001

# SIGTERM starts the drain: the listener closes and in-flight requests get
# SERVER_SHUTDOWN_TIMEOUT (default 10s) to finish; exit status 0.
STOPSIGNAL SIGTERM
# Liveness only; /ready is the readiness endpoint (Kubernetes probes it, docs/deploy.md).
# The slim image has no curl, so Python asks.
HEALTHCHECK --interval=30s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % (os.environ.get('SERVER_PORT') or '8080'), timeout=2)"]

ENTRYPOINT ["igw"]
