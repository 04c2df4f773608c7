# syntax=docker/dockerfile:1
# ILPS task manager: production image (no dev, embedded-database or sandbox packages).
#
#   docker build -t ilps-service-task-manager .
#   docker run --env-file .env -p 8064:8064 ilps-service-task-manager

# --- build: resolve exactly what poetry.lock pins into /app/.venv -------------------
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    POETRY_NO_INTERACTION=1 \
    POETRY_VIRTUALENVS_IN_PROJECT=true
RUN pip install "poetry==2.5.1"
WORKDIR /app
COPY pyproject.toml poetry.lock README.md ./
RUN poetry install --only main --no-root --no-directory

# --- runtime: the virtualenv and the sources, run as an unprivileged user -----------
FROM python:3.11-slim
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MANAGER_DEBUG_MODE=False \
    MANAGER_HOST=0.0.0.0 \
    MANAGER_PORT=8064
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --home-dir /app app
WORKDIR /app
COPY --from=build /app/.venv /app/.venv
COPY alembic.ini start.py ./
COPY migrations ./migrations
COPY app ./app
USER 10001:10001
EXPOSE 8064
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8064/health', timeout=4)"]
# uvicorn stops on SIGTERM: streams end, workers finish their stage within
# MANAGER_SHUTDOWN_GRACE_SECONDS and hand unfinished tasks back.
STOPSIGNAL SIGTERM
# As the seed does: migrate, then serve; `exec` replaces the shell with Python,
# so the stop signal reaches uvicorn itself.
CMD ["sh", "-c", "alembic upgrade head && exec python start.py"]
