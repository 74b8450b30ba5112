"""A bare aiohttp handler, the ceiling for B5: ``python -m bench.bare PORT``."""

import sys

from aiohttp import web


async def handler(request: web.Request) -> web.Response:
    return web.json_response({"id": int(request.match_info["id"]), "state": "idle"})


app = web.Application()
app.router.add_get("/processes/{id}", handler)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
