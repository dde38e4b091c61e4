# syntax=docker/dockerfile:1

# The image of files-service: `docker build -t files-service .`
# Stage 1 builds a wheel of the service and of every dependency; stage 2 installs those
# wheels with no index, so the final image needs no network, no compiler and no cache.

FROM python:3.12-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.12-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    FILES_DATA_DIR=/data
RUN groupadd --system --gid 10001 files \
    && useradd --system --no-log-init --uid 10001 --gid files \
        --home-dir /nonexistent --shell /usr/sbin/nologin files \
    && mkdir -p /data \
    && chown 10001:10001 /data
# The wheels are mounted from the build stage for this one step only: none of them stays in a layer.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index /wheels/*.whl
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8321
# SIGTERM: stop taking requests, let those in flight finish for FILES_SHUTDOWN_GRACE_SECONDS.
STOPSIGNAL SIGTERM
# The slim image has no curl: Python's own urllib asks /healthz (a non-2xx or no answer exits 1).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8321/healthz', timeout=2)"]
CMD ["files-service", "serve", "--host", "0.0.0.0", "--port", "8321"]
