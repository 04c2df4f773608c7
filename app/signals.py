"""Learning of the stop signal at once, while the server still drains requests.

uvicorn handles SIGTERM and SIGINT itself: it stops accepting connections, waits up to
`timeout_graceful_shutdown` for requests to finish, and only then runs the lifespan's
shutdown. Work that should stop at the signal (claiming new tasks) cannot wait for that,
so `observe_stop_signals` chains a callback in front of the handler the server installed.
It never replaces a default handler: where nobody handles the signal gracefully (no
server, or not in the main thread), it changes nothing.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def observe_stop_signals(on_stop: Callable[[], None]) -> Callable[[], None]:
    """Call `on_stop` on the running loop at SIGTERM/SIGINT, then the server's own handler.

    Returns a function that puts the server's handlers back (for the lifespan's exit).
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    chained: dict[int, tuple[Callable[[int, FrameType | None], object], object]] = {}
    for signum in STOP_SIGNALS:
        previous = signal.getsignal(signum)
        if not callable(previous):
            continue

        def handler(
            number: int,
            frame: FrameType | None,
            previous: Callable[[int, FrameType | None], object] = previous,
        ) -> None:
            # A signal handler runs between two bytecodes of the loop's thread: hand the
            # callback to the loop rather than touching asyncio objects from here.
            loop.call_soon_threadsafe(on_stop)
            previous(number, frame)

        signal.signal(signum, handler)
        chained[signum] = (previous, handler)

    def restore() -> None:
        for signum, (previous, handler) in chained.items():
            if signal.getsignal(signum) is handler:
                signal.signal(signum, previous)

    return restore
