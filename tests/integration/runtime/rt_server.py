"""A runtime node for crash tests: ``python rt_server.py DB_URL PORT``.

The RuntimeService with the test routing configuration behind the real HTTP app and uvicorn,
in its own process so a test can kill it with SIGKILL and start it again on the same database.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import uvicorn

sys.path.insert(0, str(Path(__file__).parent))

from rt_harness import make_service, routing_config

from expertline.db.engine import make_engine
from expertline.settings import Settings
from expertline.web.app import AppContext, create_app


async def main(url: str, port: int) -> None:
    engine = make_engine(url)
    # Offers must not time out while the test kills and restarts the process on a slow host.
    service = make_service(engine, routing_config(offer_timeout=3600.0))
    await service.async_start()
    ctx = AppContext(Settings(node="crash-node"), engine)
    ctx.services.runtime = service
    server = uvicorn.Server(
        uvicorn.Config(create_app(ctx), host="127.0.0.1", port=port, log_level="warning")
    )
    try:
        await server.serve()
    finally:
        await service.async_stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
