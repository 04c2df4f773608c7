"""The application factory: routers, middleware and a lifespan that owns every resource."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING

import httpx
from fastapi import FastAPI
from sqlalchemy import URL

from app.api import health, legacy, operations, resources, streams, users
from app.api.errors import install_error_handlers
from app.api.openapi import install_docs, install_openapi
from app.api.request_observer import RequestObserver
from app.api.trust import install_forwarded_headers, trust_warning
from app.api.upload import UploadSizeLimit
from app.config import STAGES, Settings, StageName, load_settings
from app.console import routes as console
from app.db.engine import create_database
from app.db.sessions import SessionOptions
from app.db.url import asyncpg_dsn, configured_database_url
from app.events.database_source import DatabaseTransitions
from app.events.hub import EventHub
from app.events.listener import TaskEventListener
from app.metrics import create_metrics
from app.pipeline.clients import create_stage_clients
from app.pipeline.queue import waiting_summary
from app.pipeline.workers import WorkerPool
from app.runtime import Runtime
from app.signals import observe_stop_signals
from app.tracing import NO_SPANS, tracing_requested
from app.upload_memory import UploadMemory
from app.webhooks.policy import CallbackPolicy, Resolver
from app.webhooks.reports import pending_summary
from app.webhooks.transport import guarded_client
from app.webhooks.worker import DeliveryWorker

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

    from app.tracing.otel import Tracing

log = logging.getLogger(__name__)

DESCRIPTION = """
Stores learners' recordings of a read text and runs each through preprocessing,
transcription and feedback, ending in a pronunciation assessment.

* **legacy** routes are those the ILPS gateway calls today (user id in the body);
* **tasks** routes are for new clients (user id in the `X-User-Id` header).
"""


async def _database_url(settings: Settings, stack: AsyncExitStack) -> URL:
    """The configured server, or an embedded one (asked for, no host) migrated to head."""
    if not settings.uses_embedded_database:
        return configured_database_url(settings)
    # Development only: the serving process in production never loads these.
    from app.db.embedded import start_embedded_postgres
    from app.db.migrations import upgrade_to_head

    embedded = await asyncio.to_thread(
        start_embedded_postgres, settings.db_embedded_data_dir, settings.db_postgres_name
    )
    stack.callback(embedded.stop)
    await upgrade_to_head(embedded.url)
    return embedded.url


async def _service_urls(settings: Settings, stack: AsyncExitStack) -> dict[StageName, str]:
    """The configured audio services, or in-process sandboxes on loopback (asked for, no host)."""
    urls: dict[StageName, str] = {}
    for stage in STAGES:
        if stage not in settings.sandboxed_stages():
            urls[stage] = settings.service(stage).base_url
            continue
        try:
            from app.sandbox.embedded import serve_sandbox
        except ImportError as error:  # the production image leaves the sandbox out
            raise RuntimeError(
                f"no host for the {stage} service and no sandbox installed: set "
                f"MANAGER_SERVICE_{stage.upper()}_HOST or install the 'sandbox' group"
            ) from error
        urls[stage] = await stack.enter_async_context(serve_sandbox(stage))
        log.warning(
            "%s: sandbox service on %s (MANAGER_SANDBOX_SERVICES, no host configured): "
            "its assessments are made up",
            stage,
            urls[stage],
        )
    return urls


def create_app(
    settings: Settings,
    *,
    database_url: URL | None = None,
    resolver: Resolver | None = None,
    span_exporter: SpanExporter | None = None,
) -> FastAPI:
    """Build the app; nothing connects until the lifespan starts.

    `resolver` replaces the system's DNS for webhook callbacks (tests of the SSRF rules).
    `span_exporter` turns tracing on and receives every span (tests); otherwise the
    `OTEL_*` variables decide (docs/observability.md).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            if tracing is not None:
                tracing.start()
                # Last out, so the exit's spans are exported; on a thread, as a collector
                # that is away holds the final export up to its timeout.
                stack.push_async_callback(asyncio.to_thread, tracing.shutdown)
            if (warning := trust_warning(settings)) is not None:
                log.warning("%s", warning)
            url = database_url or await _database_url(settings, stack)
            database = create_database(
                url,
                pool_size=settings.db_pool_size,
                application_name=settings.service_name,
                options=SessionOptions.from_settings(settings),
            )
            stack.push_async_callback(database.dispose)
            service_urls = await _service_urls(settings, stack)
            # One TLS context for every outgoing client: each costs a load of the CA bundle.
            tls = httpx.create_ssl_context(trust_env=False)
            clients = create_stage_clients(settings, metrics, service_urls, tls)
            stack.push_async_callback(clients.aclose)
            if tracing is not None:
                for client in clients.all():
                    tracing.instrument_client(client.http)
            listener = TaskEventListener(
                asyncpg_dsn(url), application_name=settings.service_name, options=database.options
            )
            workers = WorkerPool(
                settings, database, clients, metrics, spans=tracing if tracing else NO_SPANS
            )
            hub = EventHub(
                DatabaseTransitions(database),
                max_followers=settings.sse_max_followers,
                max_followers_per_user=settings.sse_max_followers_per_user,
                heartbeat_seconds=settings.sse_heartbeat_seconds,
                send_timeout_seconds=settings.sse_send_timeout_seconds,
            )
            for component in (workers, hub):
                listener.on_notification(component.on_task_event)
                listener.on_reconnect(component.on_reconnect)
            await listener.start()
            stack.push_async_callback(listener.stop)
            hub.start()
            stack.push_async_callback(hub.stop)
            workers.start()
            webhook_policy = CallbackPolicy(
                settings.webhook_allowed_hosts,
                resolver,
                dns_threads=settings.webhook_dns_threads,
                lookups_per_user=settings.webhook_dns_lookups_per_user,
            )
            stack.callback(webhook_policy.close)
            webhook_client = guarded_client(
                webhook_policy,
                timeout=settings.webhook_timeout_seconds,
                connections=max(1, settings.webhook_concurrency),
                tls=tls,
            )
            stack.push_async_callback(webhook_client.aclose)
            if tracing is not None:
                tracing.instrument_client(webhook_client)
            deliveries = DeliveryWorker(
                settings,
                database,
                metrics,
                render=resources.webhook_task_data,
                policy=webhook_policy,
                client=webhook_client,
                spans=tracing if tracing else NO_SPANS,
            )
            deliveries.start()

            async def read_queue() -> tuple[int, float]:
                async with database.driver() as connection:
                    return await waiting_summary(connection)

            async def read_webhooks() -> tuple[int, float]:
                async with database.autocommit.connect() as connection:
                    return await pending_summary(connection)

            metrics.scrape_time_gauges.attach(
                held=lambda: workers.held,
                followers=lambda: hub.follower_count,
                read_queue=read_queue,
                read_webhooks=read_webhooks,
            )
            # Run first on the way out: stop claiming, hand back held tasks and deliveries.
            stack.push_async_callback(deliveries.stop)
            stack.push_async_callback(workers.stop)

            stopping = asyncio.Event()

            def begin_stop() -> None:
                stopping.set()
                workers.begin_stop()
                deliveries.begin_stop()
                hub.end_all_streams()

            # The stop signal stops claiming and ends the streams at once, not after
            # uvicorn's drain (which would wait for the streams).
            stack.callback(observe_stop_signals(begin_stop))
            app.state.runtime = Runtime(
                settings=settings,
                database=database,
                clients=clients,
                listener=listener,
                workers=workers,
                hub=hub,
                metrics=metrics,
                upload_memory=UploadMemory(int(settings.upload_memory_mb * 1024 * 1024)),
                webhook_policy=webhook_policy,
                deliveries=deliveries,
                stopping=stopping,
            )
            # Everything built so far lives as long as the process: keep it out of the
            # collector's full passes, which otherwise pause requests for milliseconds.
            gc.collect()
            gc.freeze()
            yield

    metrics = create_metrics()  # in-memory only; one registry per app, so tests can build many
    app = FastAPI(
        title="ILPS task manager",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        license_info={"name": "GPL-3.0-only", "identifier": "GPL-3.0-only"},
        docs_url=None,  # install_docs serves both pages without a CDN
        redoc_url=None,
    )
    tracing: Tracing | None = None
    if span_exporter is not None or tracing_requested():
        from app.tracing.otel import Tracing  # loaded only when tracing is on

        tracing = Tracing(settings.service_name, exporter=span_exporter)
        tracing.instrument_app(app)
    # Innermost: the client's address is settled before any route judges it.
    install_forwarded_headers(app, settings)
    app.add_middleware(
        UploadSizeLimit,
        max_upload_mb=settings.max_upload_mb,
        min_rate_bytes=settings.upload_min_rate_kbps * 1024,
        grace_seconds=settings.upload_rate_grace_seconds,
    )
    # Outermost: every line of a request has its id, and the status it records is the one
    # the client got.
    app.add_middleware(RequestObserver, metrics=metrics)
    install_error_handlers(app)
    install_openapi(app)
    install_docs(app)
    app.include_router(health.router)
    app.include_router(operations.router)
    app.include_router(users.router)
    # /tasks before the legacy catch-all POST /{task_id}.
    app.include_router(resources.router)
    app.include_router(streams.router)
    app.include_router(console.router)
    if settings.serves_demo:
        from app.demo import routes as demo  # a development tool, never in production

        app.include_router(demo.router)
    app.include_router(legacy.router)
    return app


def create_app_from_environment() -> FastAPI:
    """For `uvicorn --factory app.main:create_app_from_environment --no-proxy-headers`
    (the app reads X-Forwarded-For itself, from MANAGER_FORWARDED_ALLOW_IPS only)."""
    return create_app(load_settings())
