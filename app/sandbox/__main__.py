"""Run one sandbox service: ``python -m app.sandbox STAGE [--host H] [--port P]``."""

from __future__ import annotations

import argparse
from typing import cast

import uvicorn

from app.sandbox import DEFAULT_PORTS, STAGES, Stage, create_sandbox_app


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and serve the stage until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m app.sandbox", description="Serve a sandbox ILPS audio service."
    )
    parser.add_argument("stage", choices=STAGES, help="the pipeline stage to serve")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--port",
        type=int,
        help="port to listen on (default: 8065, 8066, 8067 as in production)",
    )
    parser.add_argument("--log-level", default="info", help="uvicorn's log level")
    args = parser.parse_args(argv)
    stage = cast(Stage, args.stage)
    port: int = args.port if args.port is not None else DEFAULT_PORTS[stage]
    uvicorn.run(create_sandbox_app(stage), host=args.host, port=port, log_level=args.log_level)


if __name__ == "__main__":
    main()
