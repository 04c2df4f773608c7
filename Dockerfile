# syntax=docker/dockerfile:1
# ILPS task manager: production image (no dev, embedded-database or sandbox packages).
#
#   docker build -t ilps-service-task-manager .
#   docker run --env-file .env -p 127.0.0.1:8064:8064 --read-only --tmpfs /tmp \
#       --cap-drop ALL --security-opt no-new-privileges ilps-service-task-manager
#
# Build arguments, all optional (the defaults build from the public images and index):
#   BASE_IMAGE               any Debian-like image with python3 (>= 3.11) and python3-venv;
#                            curl is installed when the image lacks it
#   PACKAGE_INDEX_URL        the package index pip installs Poetry from (empty: pip's default)
#   POETRY_PYPI_MIRROR_URL   the index Poetry resolves poetry.lock through (empty: PyPI)
# A file named `.build-ca.pem` in the build context, when present, is the CA bundle
# both trust for that build only; it never reaches the runtime image.
#
# A second target, `sandbox`, adds the offline stand-ins of the three audio services:
#   docker build --target sandbox -t ilps-task-manager-sandbox .
#   docker run --network host ilps-task-manager-sandbox feedback --port 8067

ARG BASE_IMAGE=python:3.11-slim

# --- build: resolve exactly what poetry.lock pins into /app/.venv -------------------
FROM ${BASE_IMAGE} AS build
ARG PACKAGE_INDEX_URL=""
ARG POETRY_PYPI_MIRROR_URL=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    POETRY_NO_INTERACTION=1 \
    POETRY_VIRTUALENVS_IN_PROJECT=true \
    POETRY_KEYRING_ENABLED=false \
    POETRY_PYPI_MIRROR_URL=${POETRY_PYPI_MIRROR_URL}
WORKDIR /app
# The `[m]` makes the CA bundle optional: the glob may match nothing.
COPY pyproject.toml poetry.lock README.md .build-ca.pe[m] ./
# Poetry gets a virtualenv of its own: Debian's python refuses system-wide pip (PEP 668).
# --compile: bytecode now, as the runtime user cannot write it (see below).
# The project's /app/.venv is made with the base's python3, so it works in the runtime
# stage, which starts from the same base.
RUN set -eu; \
    if [ -f .build-ca.pem ]; then \
        export PIP_CERT="$PWD/.build-ca.pem" REQUESTS_CA_BUNDLE="$PWD/.build-ca.pem" \
            SSL_CERT_FILE="$PWD/.build-ca.pem"; \
    fi; \
    python3 -m venv /opt/poetry; \
    /opt/poetry/bin/pip install ${PACKAGE_INDEX_URL:+--index-url "$PACKAGE_INDEX_URL"} \
        "poetry==2.5.1" "poetry-plugin-pypi-mirror==0.6.5"; \
    python3 -m venv /app/.venv; \
    /opt/poetry/bin/poetry install --only main --no-root --no-directory --compile; \
    rm -f .build-ca.pem

# --- build-sandbox: the same environment plus the sandbox group ---------------------
FROM build AS build-sandbox
COPY pyproject.toml .build-ca.pe[m] ./
RUN set -eu; \
    if [ -f .build-ca.pem ]; then \
        export REQUESTS_CA_BUNDLE="$PWD/.build-ca.pem" SSL_CERT_FILE="$PWD/.build-ca.pem"; \
    fi; \
    /opt/poetry/bin/poetry install --only main,sandbox --no-root --no-directory --compile; \
    rm -f .build-ca.pem

# --- runtime: what both targets share, run as an unprivileged user ------------------
FROM ${BASE_IMAGE} AS runtime
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MANAGER_DEBUG_MODE=False \
    MANAGER_HOST=0.0.0.0 \
    MANAGER_PORT=8064
# The ILPS compose healthcheck runs `curl -f http://localhost:8064/health` inside the
# container; the slim Python images have no curl.
# hadolint ignore=DL3008
RUN if ! command -v curl >/dev/null 2>&1; then \
        apt-get update \
        && apt-get install -y --no-install-recommends curl \
        && rm -rf /var/lib/apt/lists/*; \
    fi
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --home-dir /app app
WORKDIR /app

# --- sandbox: the stand-in audio services (`python -m app.sandbox STAGE ...`) -------
# Each target copies its virtualenv before the sources, so editing the sources
# leaves the (large) virtualenv layer cached.
FROM runtime AS sandbox
COPY --from=build-sandbox /app/.venv /app/.venv
COPY alembic.ini start.py ./
COPY migrations ./migrations
COPY app ./app
RUN python -m compileall -q app
USER 10001:10001
ENTRYPOINT ["python", "-m", "app.sandbox"]
CMD ["--help"]

# --- production (the default target) -------------------------------------------------
FROM runtime AS production
COPY --from=build /app/.venv /app/.venv
COPY alembic.ini start.py ./
COPY migrations ./migrations
COPY app ./app
# Bytecode compiled now: the unprivileged user cannot write it, and compiling every
# module at each start slows the way to `healthy`.
RUN python -m compileall -q app migrations
USER 10001:10001
EXPOSE 8064
# The timings of the ILPS compose file, so `docker run` alone behaves alike; the port is
# the one the service listens on (MANAGER_PORT, 8064 unless the deployment changes it).
HEALTHCHECK --interval=10s --timeout=5s --retries=10 \
    CMD ["sh", "-c", "curl -fsS -o /dev/null \"http://127.0.0.1:${MANAGER_PORT:-8064}/health\" || exit 1"]
# uvicorn stops on SIGTERM: streams end, workers finish their stage within
# MANAGER_SHUTDOWN_GRACE_SECONDS and hand unfinished tasks back.
STOPSIGNAL SIGTERM
# Migrate, then serve, as the seed's `alembic upgrade head && python start.py` did, in
# one interpreter: start.py runs Alembic's upgrade itself, and skips it when the database
# is already at head. Python is PID 1, so the stop signal reaches uvicorn itself.
CMD ["python", "start.py"]
