"""Run the task manager with the configured settings: `python start.py`.

It first brings the configured database to the migrations' head, as `alembic upgrade head`
did in front of it (the image's command before), in the same interpreter; a database
already at head costs one query, not an Alembic run.
"""

from __future__ import annotations

import logging
import math
import sys

import uvicorn

from app.config import ConfigurationError, load_settings
from app.db.migrations import upgrade_at_start
from app.db.url import configured_database_url
from app.header_deadline import with_header_deadline
from app.logs import configure_logging
from app.main import create_app

log = logging.getLogger("app.start")


def main() -> int:
    try:
        settings = load_settings()
    except ConfigurationError as error:
        print(f"ilps-task-manager: {error}", file=sys.stderr)
        return 2
    # An embedded server (asked for, no host) is started and migrated by the lifespan.
    head = (
        None
        if settings.uses_embedded_database
        else upgrade_at_start(configured_database_url(settings))
    )
    configure_logging(
        json_format=settings.logs_as_json,
        level=logging.DEBUG if settings.debug_mode else logging.INFO,
        graylog=(
            (settings.graylog_host, settings.graylog_port)
            if settings.graylog_enable and settings.graylog_host
            else None
        ),
        source=settings.service_name,
    )
    if head is not None:
        log.info("database schema at %s, the migrations' head: nothing to upgrade", head)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,  # keep the handlers configure_logging installed
        access_log=False,  # RequestContext writes the access line, with the request id
        # uvicorn would believe X-Forwarded-For from 127.0.0.1; the app reads it itself,
        # from MANAGER_FORWARDED_ALLOW_IPS only (app/api/trust.py).
        proxy_headers=False,
        http=with_header_deadline(settings.header_timeout_seconds),
        # Streams end at once on shutdown; requests still running get the same grace
        # period as stage calls, which start theirs at the signal too (app/signals.py).
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_seconds),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
