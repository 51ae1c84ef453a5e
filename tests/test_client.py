

def test_idle_connections_are_dropped_before_uvicorn_closes_them():
    import asyncio as _asyncio

    from loadgen.client import KEEPALIVE_S, make_session

    async def go():
        session = make_session(0)
        try:
            return session.connector._keepalive_timeout
        finally:
            await session.close()

    assert KEEPALIVE_S < 5.0  # uvicorn's timeout_keep_alive default
    assert _asyncio.run(go()) == KEEPALIVE_S
