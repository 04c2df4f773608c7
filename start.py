"""Run the task manager with the configured settings: `python start.py`."""

from __future__ import annotations

import logging
import math
import sys

import uvicorn

from app.config import ConfigurationError, load_settings
from app.logs import configure_logging
from app.main import create_app


def main() -> int:
    try:
        settings = load_settings()
    except ConfigurationError as error:
        print(f"ilps-task-manager: {error}", file=sys.stderr)
        return 2
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
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,  # keep the handlers configure_logging installed
        access_log=False,  # RequestContext writes the access line, with the request id
        # Streams end at once on shutdown; requests still running get the same grace
        # period as stage calls, which start theirs at the signal too (app/signals.py).
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_seconds),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
