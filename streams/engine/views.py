"""The worker's HTTP API on Faust's web server: one AOR, problems, health, readiness, metrics.

``GET /v1/aors/{aor}`` answers from whichever worker owns the AOR's partition
(forwarding once, never twice); ``/v1/problems`` answers for the partitions
this worker owns. Faust's table and router dump endpoints are off (trap 10).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final
from urllib.parse import quote

from faust.web import Request, Response, View

from processors.problems import problems_response
from processors.sipuri import AorError, canonical_aor
from processors.why import not_found_body
from schemas import decode_state, encode_state
from streams.log.routing import kafka_partition, owner_of, same_worker
from streams.metrics.engine import render
from streams.webserver import CHALLENGE

if TYPE_CHECKING:
    from streams.engine.worker import Engine

ROUTED_HEADER: Final = "X-Regstate-Routed"
"""Set on a request one worker forwards to another: the receiver never forwards again."""
UNAUTHORIZED: Final = {"WWW-Authenticate": CHALLENGE}


def add_views(engine: Engine) -> None:
    """Register the API's pages on ``engine.app``."""
    app = engine.app
    # The shared bearer-token check (streams/webserver.py), on each data view.
    auth = engine.http_auth

    def refused(view: View, request: Request) -> Response | None:
        if auth.allows(request.rel_url.path, request.headers.get("Authorization")):
            return None
        return view.json({"error": "unauthorized"}, status=401, headers=dict(UNAUTHORIZED))

    @app.page("/v1/aors/{aor}")
    async def aor(view: View, request: Request, aor: str) -> Response:
        return refused(view, request) or await aor_view(engine, view, request, aor)

    @app.page("/healthz")
    async def healthz(view: View, request: Request) -> Response:
        return view.json({"status": "ok", "worker": engine.settings.worker_id})

    @app.page("/readyz")
    async def readyz(view: View, request: Request) -> Response:
        ready = engine.ready()
        body = {
            "ready": ready,
            "worker": engine.settings.worker_id,
            "partitions": sorted(engine.owned),
        }
        return view.json(body, status=200 if ready else 503)

    @app.page("/v1/problems")
    async def problems(view: View, request: Request) -> Response:
        return refused(view, request) or await problems_view(engine, view, request)

    @app.page("/metrics")
    async def metrics(view: View, request: Request) -> Response:
        text = render(
            engine.metrics,
            worker=engine.settings.worker_id,
            lag=engine.lag(),
            bindings=engine.planner.bindings(),
            ready=engine.ready(),
            pending_expires=engine.planner.pending_sends(),
        )
        return view.text(text, content_type="text/plain; version=0.0.4")


async def aor_view(engine: Engine, view: View, request: Request, aor: str) -> Response:
    """``GET /v1/aors/{aor}``: active contacts of one AOR, from whichever worker owns it."""
    try:
        canonical = canonical_aor(aor)
    except AorError as exc:
        return view.json({"error": "invalid_aor", "detail": str(exc)}, status=400)
    key = canonical.encode()
    partition = kafka_partition(key, engine.settings.partitions)
    if not engine.ready():
        return view.json({"error": "not_ready"}, status=503)
    distribution = engine.app.assignor.changelog_distribution  # type: ignore[attr-defined]  # faust's PartitionAssignor
    owner = owner_of(distribution, engine.table.changelog_topic_name, partition)
    if owner is None:
        return view.json({"error": "no_owner", "partition": partition}, status=503)
    if not same_worker(owner, str(engine.app.conf.canonical_url)):
        if request.headers.get(ROUTED_HEADER):
            # The sender's assignment is newer or older than ours: don't ping-pong.
            return view.json({"error": "not_owner", "partition": partition}, status=503)
        return await _forward(engine, view, owner, canonical)
    if partition not in engine.owned:
        return view.json({"error": "recovering", "partition": partition}, status=503)
    raw = engine.table.stored(partition, key)
    state = None if raw is None else decode_state(raw)
    active = None if state is None else state.only_active(engine.now_ms())
    if active is None or not active.contacts:
        # Issue 16 point 6: the 404 says why (the AOR's last health).
        return view.json(not_found_body(canonical, state), status=404)
    return view.bytes(
        encode_state(active, internal=False), content_type="application/json", status=200
    )


async def problems_view(engine: Engine, view: View, request: Request) -> Response:
    """``GET /v1/problems?state=...&limit=N``: AORs of this worker's partitions by health.

    Each worker answers for the partitions it owns (``partitions`` in the
    body); a whole-cluster view asks every worker, or runs ``regstate problems``.
    """
    if not engine.ready():
        return view.json({"error": "not_ready"}, status=503)
    owned = sorted(engine.owned)
    states = (decode_state(raw) for p in owned for _, raw in engine.table_items(p))
    status, body = problems_response(
        states,
        state_params=[v for k, v in request.query.items() if k == "state"],
        limit_param=request.query.get("limit"),
        now_ms=engine.now_ms(),
    )
    body.update(worker=engine.settings.worker_id, partitions=owned)
    return view.json(body, status=status)


async def _forward(engine: Engine, view: View, owner: str, aor: str) -> Response:
    url = f"{owner.rstrip('/')}/v1/aors/{quote(aor, safe=':@')}"
    try:
        async with engine.app.http_client.get(
            url,
            headers={ROUTED_HEADER: engine.settings.worker_id, **engine.http_auth.client_headers()},
        ) as resp:
            body = await resp.read()
            return view.bytes(body, content_type="application/json", status=resp.status)
    except Exception as exc:  # noqa: BLE001 - any transport error is "owner unreachable"
        return view.json({"error": "owner_unreachable", "detail": repr(exc)}, status=503)
