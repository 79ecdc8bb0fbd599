# Image of the SLA service (faust worker, deadline scanner + HTTP, port 8082).
#
# Build from the repository root, which is the build context:
#   docker build -f deploy/docker/sla.Dockerfile -t paht/sla:local .
# deploy/compose.yaml builds it and runs `python -m sla migrate` as a one-shot first.
# sla.Dockerfile.dockerignore (next to this file) limits the context to what is copied.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv

RUN pip install --no-cache-dir uv==0.13.8

WORKDIR /app

# uv.lock covers the whole workspace, so every member's pyproject.toml must be present for
# `uv sync --frozen` to read it; only paht_common's and sla's sources enter the image.
COPY pyproject.toml uv.lock ./
COPY libs/common/pyproject.toml libs/common/pyproject.toml
COPY services/intake/pyproject.toml services/intake/pyproject.toml
COPY services/routing/pyproject.toml services/routing/pyproject.toml
COPY services/sla/pyproject.toml services/sla/pyproject.toml
COPY services/notify/pyproject.toml services/notify/pyproject.toml
COPY deploy/local/pyproject.toml deploy/local/pyproject.toml

# Third-party dependencies first: this layer survives source-only changes.
RUN uv sync --frozen --no-dev --no-install-workspace --package paht-sla

COPY libs/common libs/common
COPY services/sla services/sla

RUN uv sync --frozen --no-dev --package paht-sla

FROM ${PYTHON_IMAGE}

ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PAHT_ENV=production \
    SLA_HTTP_HOST=0.0.0.0 \
    SLA_HTTP_PORT=8082

RUN groupadd --system --gid 10001 paht \
    && useradd --system --uid 10001 --gid paht --create-home --home-dir /home/paht \
       --shell /usr/sbin/nologin paht \
    && install -d -o paht -g paht /var/lib/paht

# The code stays read-only under /app; the process runs in a directory it may write to.
COPY --from=build /app /app
WORKDIR /var/lib/paht
USER 10001:10001

EXPOSE 8082

HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ['SLA_HTTP_PORT'] + '/healthz', timeout=2)"

CMD ["python", "-m", "sla"]
