"""Run a tree's `start.py` on uvicorn's pure-Python stack: asyncio's loop and h11.

    python benchmarks/stock_server.py /path/to/tree/start.py

uvicorn's defaults (`loop="auto"`, `http="auto"`) pick uvloop and httptools whenever they
are installed, and no environment variable turns that off. For a before/after of the
server stack in one virtualenv, this launcher points the two "auto" entries at asyncio and
h11 before `start.py` runs, so any tree (this one or `--source`) runs unchanged on the
stack it had before `uvicorn[standard]`. Used by `benchmarks.reads --stack plain`.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import uvicorn.config


def main() -> None:
    start = Path(sys.argv[1]).resolve()
    uvicorn.config.LOOP_FACTORIES["auto"] = uvicorn.config.LOOP_FACTORIES["asyncio"]
    uvicorn.config.HTTP_PROTOCOLS["auto"] = uvicorn.config.HTTP_PROTOCOLS["h11"]
    # The tree's own packages, not this launcher's folder, come first on the path.
    sys.path[0] = str(start.parent)
    sys.argv = [str(start)]
    runpy.run_path(str(start), run_name="__main__")


if __name__ == "__main__":
    main()
