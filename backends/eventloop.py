"""Running asyncio code: a coroutine on uvloop when it is installed (fewer microseconds per chunk on the load
path), else on asyncio's loop; an aiohttp application in the foreground until SIGINT or SIGTERM (the sim and the
tests' servers)."""

from __future__ import annotations

import asyncio
import signal
from typing import Any, Callable, Coroutine, TypeVar

from aiohttp import web

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def serve_until_stopped(app: web.Application, host: str, port: int,
                        on_started: Callable[[int], None] | None = None) -> None:
    """Bind host:port (0 = any free port), call on_started(bound port), run until a stop signal, clean up."""

    async def main() -> None:
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        if on_started is not None:
            on_started(site._server.sockets[0].getsockname()[1] if site._server else port)  # type: ignore[union-attr]
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()

    run(main())
