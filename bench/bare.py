"""A bare aiohttp handler, the ceiling for B5 and the HTTP floor for B2 and B3:
``python -m bench.bare PORT``. It answers the same routes the benchmark's client calls,
with a fixed body and no work behind it."""

import sys

from aiohttp import web


def _record(request: web.Request, state: str) -> web.Response:
    return web.json_response({"id": int(request.match_info["id"]), "state": state})


async def get(request: web.Request) -> web.Response:
    return _record(request, "idle")


async def kill(request: web.Request) -> web.Response:
    await request.json()
    return _record(request, "terminating")


app = web.Application()
app.router.add_get("/processes/{id}", get)
app.router.add_get("/processes/{id}/wait", get)
app.router.add_post("/processes/{id}/signals/kill", kill)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
