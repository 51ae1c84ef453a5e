"""Messages between the parent and its client worker processes: pickled frames over a socket pair (the worker is
a trusted child of this process)."""

from __future__ import annotations

import asyncio
import pickle
import struct

_HEADER = struct.Struct("!I")


def frame(message) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


async def read(reader: asyncio.StreamReader):
    """The next message, or None at end of stream (the other side is gone)."""
    try:
        size = _HEADER.unpack(await reader.readexactly(_HEADER.size))[0]
        return pickle.loads(await reader.readexactly(size))
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
