"""The HTTP session a provider client holds: made on first use, inside the running event
loop (aiohttp refuses one made outside it), and closed by the client only if it made it."""

from __future__ import annotations

import aiohttp


class LazySession:
    def __init__(self, session: aiohttp.ClientSession | None = None) -> None:
        self._session = session
        self._owned = session is None

    def get(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
            self._owned = True
        return self._session

    async def close(self) -> None:
        if self._owned and self._session is not None:
            await self._session.close()
        self._session = None
