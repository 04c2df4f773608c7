"""What operators look at: Prometheus metrics and readiness."""

from __future__ import annotations

import asyncio

import httpx
from fastapi import APIRouter, Response, status
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field

from app.api.deps import RuntimeDep
from app.db.migrations import current_revision, head_revision, serving_address
from app.pipeline.clients import ServiceClient
from app.runtime import Runtime

router = APIRouter(tags=["operations"])

HEALTH_PROBE_SECONDS = 2.0


class DatabaseReadiness(BaseModel):
    ok: bool
    schema_revision: str | None = Field(description="The migration the database is at.")
    expected_revision: str | None = Field(description="The newest migration of this build.")
    error: str | None = None
    host: str | None = Field(
        default=None,
        description="The server answering (with a host list, the primary); "
        "null over a Unix socket.",
    )
    port: int | None = None


class ListenerReadiness(BaseModel):
    ok: bool = Field(description="False when the LISTEN task has ended: streams get no updates.")
    state: str = Field(description="`connecting`, `connected`, `reconnecting` or `stopped`.")


class ServiceReadiness(BaseModel):
    ok: bool
    url: str
    status_code: int | None = None
    error: str | None = None


class WorkerReadiness(BaseModel):
    # `live` is the JSON key clients already read.
    model_config = ConfigDict(validate_by_name=True)

    ok: bool = Field(description="Every configured worker is running and none is stopping.")
    running: int = Field(
        alias="live", description="Pipeline workers of this process still running."
    )
    configured: int = Field(description="`MANAGER_WORKER_CONCURRENCY`.")


class ReadinessResponse(BaseModel):
    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "status": "ready",
                    "database": {
                        "ok": True,
                        "schema_revision": "0001",
                        "expected_revision": "0001",
                        "error": None,
                    },
                    "listener": {"ok": True, "state": "connected"},
                    "workers": {"ok": True, "live": 8, "configured": 8},
                    "services": {
                        "transcribing": {
                            "ok": False,
                            "url": "http://transcribing:8066/health",
                            "status_code": 503,
                            "error": None,
                        }
                    },
                }
            ]
        }
    }

    status: str = Field(
        description="`ready` when the database answers at the latest schema, the listener "
        "runs (connected or reconnecting) and every configured worker of this process runs."
    )
    database: DatabaseReadiness
    listener: ListenerReadiness
    workers: WorkerReadiness
    services: dict[str, ServiceReadiness] = Field(
        description="Each audio service's /health; reported, never a reason to be unready."
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
)
async def metrics(runtime: RuntimeDep) -> Response:
    """Counters and histograms of this process; queue gauges read from the database."""
    # The queues' gauges need a query: read them before rendering.
    await runtime.metrics.scrape_time_gauges.refresh()
    return Response(runtime.metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.get(
    "/health/ready",
    response_model=ReadinessResponse,
    summary="Readiness: database reachable and migrated, all workers running",
    responses={503: {"model": ReadinessResponse, "description": "Not ready."}},
)
async def readiness(runtime: RuntimeDep, response: Response) -> ReadinessResponse:
    database, services = await asyncio.gather(
        _database_readiness(runtime), _services_readiness(runtime)
    )
    state = runtime.listener.state
    # While it reconnects, streams only lag (it re-reads on connecting); stopped, they stall.
    listener = ListenerReadiness(ok=state != "stopped", state=state)
    workers = _workers_readiness(runtime)
    ready = database.ok and listener.ok and workers.ok
    if not ready:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return ReadinessResponse(
        status="ready" if ready else "not ready",
        database=database,
        listener=listener,
        workers=workers,
        services=services,
    )


def _workers_readiness(runtime: Runtime) -> WorkerReadiness:
    pool = runtime.workers
    running, configured = pool.running, pool.configured
    return WorkerReadiness(
        ok=running >= configured and not pool.stopping, running=running, configured=configured
    )


async def _database_readiness(runtime: Runtime) -> DatabaseReadiness:
    expected = head_revision()
    try:
        async with asyncio.timeout(HEALTH_PROBE_SECONDS), runtime.database.sessions() as session:
            current = await current_revision(session)
            host, port = await serving_address(session)
    except Exception as error:
        return DatabaseReadiness(
            ok=False,
            schema_revision=None,
            expected_revision=expected,
            error=f"database unreachable ({type(error).__name__})",
        )
    at_head = current == expected
    return DatabaseReadiness(
        ok=at_head,
        schema_revision=current,
        expected_revision=expected,
        error=None if at_head else "the schema is not at the latest migration",
        host=host,
        port=port,
    )


async def _services_readiness(runtime: Runtime) -> dict[str, ServiceReadiness]:
    clients = runtime.clients.all()
    results = await asyncio.gather(*(_probe(client) for client in clients))
    return {client.stage: result for client, result in zip(clients, results, strict=True)}


async def _probe(client: ServiceClient) -> ServiceReadiness:
    url = str(client.http.base_url.join("health"))
    try:
        answer = await client.http.get("health", timeout=HEALTH_PROBE_SECONDS)
    except httpx.HTTPError as error:
        return ServiceReadiness(ok=False, url=url, error=type(error).__name__)
    return ServiceReadiness(ok=answer.is_success, url=url, status_code=answer.status_code)
