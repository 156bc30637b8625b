"""HTTP front door (FastAPI): `POST /v1/reward`, OpenRLHF's `POST /get_reward`, `/healthz`, `/readyz`, `/metrics`.

Every error is a 4xx with a sentence (`{"error": ...}`): malformed JSON, wrong types and null fields are
422, bodies over the cap 413, a missing or wrong bearer token (or `?token=` on
`/get_reward`) 401, a full queue or a client over its rate
(`http_rate_per_s`, off by default) 429, a stopping server 503.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError
from starlette.concurrency import run_in_threadpool

from services.reward import openrlhf
from services.reward.config import RewardConfig
from services.reward.pool import PoolBusy, PoolClosed
from services.reward.scoring import BadRequest, Item, Scorer
from shared.auth import bearer_ok, token_ok

M = TypeVar("M", bound=BaseModel)


class HttpItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    response: StrictStr
    gold: StrictStr
    mode: Literal["instruct", "pretrained"] = "instruct"
    options: list[StrictStr] = Field(default_factory=list)
    item_id: StrictStr = ""


class RewardRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[HttpItem]
    format_weight: float | None = Field(None, ge=0, allow_inf_nan=False)


def _error(status: int, sentence: str, retry_after: bool = False) -> JSONResponse:
    return JSONResponse({"error": sentence}, status_code=status, headers={"Retry-After": "1"} if retry_after else None)


def _validation_sentence(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts) + " (send JSON matching the documented schema, UTF-8 encoded)"


async def _parse(request: Request, model: type[M]) -> M:
    """The JSON body as `model`, whatever the Content-Type (OpenRLHF clients send JSON; curl -d does not say so)."""
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as e:
        raise RequestValidationError(e.errors(include_input=False, include_url=False)) from e


class BodyLimit:
    """ASGI middleware: refuse bodies above `limit` bytes with 413 before reading them whole."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._too_large(scope, receive, send)
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._too_large(scope, receive, send)

    async def _too_large(self, scope: dict, receive: Any, send: Any) -> None:
        sentence = f"request body is larger than {self.limit} bytes; send smaller batches"
        await _error(413, sentence)(scope, receive, send)


class _TooLarge(Exception):
    pass


class RateLimit:
    """ASGI middleware: a token bucket per client address; over it, 429 with a sentence (probes exempt)."""

    _EXEMPT = ("/healthz", "/readyz")
    _MAX_CLIENTS = 10_000

    def __init__(self, app: Any, per_s: float, burst: int) -> None:
        self.app, self.per_s, self.burst = app, per_s, burst
        self.buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, monotonic time of last update)

    def _admit(self, client: str) -> bool:
        now = time.monotonic()
        tokens, last = self.buckets.get(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.per_s)
        if len(self.buckets) >= self._MAX_CLIENTS and client not in self.buckets:
            self.buckets = {c: v for c, v in self.buckets.items() if v[0] + (now - v[1]) * self.per_s < self.burst}
        self.buckets[client] = (tokens - 1, now) if tokens >= 1 else (tokens, now)
        return tokens >= 1

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not self.per_s or scope.get("path") in self._EXEMPT:
            return await self.app(scope, receive, send)
        client = (scope.get("client") or ("unknown", 0))[0]
        if self._admit(client):
            return await self.app(scope, receive, send)
        sentence = (f"too many requests from {client}: the limit is {self.per_s:g}/s (burst {self.burst}); "
                    "slow down and retry")
        await _error(429, sentence, retry_after=True)(scope, receive, send)


def create_app(cfg: RewardConfig, scorer: Scorer, is_ready: Callable[[], bool]) -> RateLimit:
    """The FastAPI app wrapped in the rate and body-size limits (an ASGI app uvicorn serves)."""
    app = FastAPI(title="Eureka reward", docs_url=None, redoc_url=None, openapi_url=None)
    metrics = scorer.metrics

    def auth(request: Request) -> None:
        if not bearer_ok(request.headers.get("authorization"), cfg.security.service_token):
            metrics.errors.labels(kind="unauthenticated").inc()
            raise _Unauthorized

    def auth_or_url_token(request: Request) -> None:
        """The bearer header, or `?token=` in the URL (`--remote_rm_url` is all OpenRLHF clients let one set)."""
        if not token_ok(request.query_params.get("token"), cfg.security.service_token):
            auth(request)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        metrics.errors.labels(kind="invalid").inc()
        return _error(422, _validation_sentence(exc))

    @app.exception_handler(_Unauthorized)
    async def _unauth(request: Request, exc: Exception) -> JSONResponse:
        sentence = ("missing or wrong service token: send 'Authorization: Bearer <EUREKA_SECURITY__SERVICE_TOKEN>' "
                    "(on /get_reward also '?token=<EUREKA_SECURITY__SERVICE_TOKEN>' in the URL)")
        return _error(401, sentence)

    @app.exception_handler(BadRequest)
    async def _bad(request: Request, exc: BadRequest) -> JSONResponse:
        return _error(422, str(exc))

    @app.exception_handler(PoolBusy)
    async def _busy(request: Request, exc: PoolBusy) -> JSONResponse:
        return _error(429, str(exc), retry_after=True)

    @app.exception_handler(PoolClosed)
    async def _closed(request: Request, exc: PoolClosed) -> JSONResponse:
        return _error(503, str(exc), retry_after=True)

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> Response:
        if is_ready():
            return JSONResponse({"status": "ready"})
        return _error(503, "the worker pool is starting or stopping; retry shortly")

    @app.get("/metrics", dependencies=[Depends(auth)])
    def metrics_page() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/reward", dependencies=[Depends(auth)])
    async def reward(request: Request) -> dict:
        body = await _parse(request, RewardRequest)
        items = [Item(i.response, i.gold, i.mode, tuple(i.options), i.item_id) for i in body.items]
        results = await run_in_threadpool(scorer.score, items, body.format_weight, "http")
        return {"results": [
            {"item_id": r.item_id, "accuracy": r.accuracy, "format": r.format, "total": r.total,
             "extracted": r.extracted, "status": r.status.value, "detail": r.detail}
            for r in results
        ]}

    @app.post("/get_reward", dependencies=[Depends(auth_or_url_token)])
    async def get_reward(request: Request, mode: Literal["instruct", "pretrained"] | None = Query(None)) -> dict:
        body = await _parse(request, openrlhf.OpenRLHFRequest)
        golds = openrlhf.golds(body)
        use = mode or cfg.get_reward_mode
        items = [Item(openrlhf.response_from_query(q), g, use) for q, g in zip(body.query, golds)]
        results = await run_in_threadpool(scorer.score, items, None, "get_reward")
        return openrlhf.reply(results)

    return RateLimit(BodyLimit(app, cfg.max_http_body_bytes), cfg.http_rate_per_s, cfg.http_rate_burst)


class _Unauthorized(Exception):
    pass
