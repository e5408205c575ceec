"""Prometheus metrics: `GET /metrics`, fed by a request middleware and the generation service.

Every label has a bounded set of values, so a scrape stays small whatever callers send:
routes are the app's path templates (not raw paths), and models are the catalog's names
(anything else, such as a model routed through LiteLLM by prefix, counts as `other`).

`/metrics` needs no key, as operators' scrapers expect; with `IMAGEGATE_METRICS_TOKEN`
set it requires `Authorization: Bearer <token>`.

With several worker processes (`imagegate serve --workers N`) a scrape must describe the
whole server, whichever worker answers it: `SharedMetrics` switches prometheus_client to
its multiprocess mode, where every process keeps its values in small mmap'd files of its
own under the data dir and a scrape sums them all. A worker that dies leaves its files,
so its counts stay in the totals, and its replacement counts on in files of its own:
counters never go down while the server runs.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    values,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from imagegate.generation import Generation

OTHER_MODEL = "other"
UNMATCHED_ROUTE = "unmatched"

# Image generation takes from tens of milliseconds (local) to minutes (a slow provider).
PROVIDER_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
# prometheus_client's multiprocess mode reads its directory from this variable.
SHARED_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
# This process's shared directory while SharedMetrics is enabled (workers inherit it).
_shared_directory: Path | None = None


def _interrupted_calls(registry: CollectorRegistry) -> Counter:
    return Counter(
        "imagegate_interrupted_calls",
        "Calls found unfinished after a crash and ended as interrupted",
        registry=registry,
    )


class Metrics:
    """The process's counters, in a registry of its own (one per app, so several apps
    in one process, as in tests, never collide)."""

    def __init__(self, models: Iterable[str]) -> None:
        self.models = frozenset(models)
        self.registry = CollectorRegistry()
        # What a scrape reads: this registry, or every process's files when shared.
        self.scraped = self.registry
        if _shared_directory is not None:
            self.scraped = CollectorRegistry()
            MultiProcessCollector(self.scraped, path=str(_shared_directory))
        r = self.registry
        self.http_requests = Counter(
            "imagegate_http_requests",
            "HTTP requests answered, by method, route template and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_duration = Histogram(
            "imagegate_http_request_duration_seconds",
            "Time from request to the end of the answer (streams included)",
            ["method", "route"],
            buckets=HTTP_BUCKETS,
            registry=r,
        )
        self.generations = Counter(
            "imagegate_generations",
            "Generations by model and outcome (success, partial, error)",
            ["model", "status"],
            registry=r,
        )
        self.images = Counter(
            "imagegate_images", "Images generated and returned", ["model"], registry=r
        )
        self.errors = Counter(
            "imagegate_generation_errors",
            "Failed generations by model and error type (partial failures: partial_failure)",
            ["model", "error_type"],
            registry=r,
        )
        self.provider_latency = Histogram(
            "imagegate_provider_latency_seconds",
            "Time the provider took per generation, retries included",
            ["model"],
            buckets=PROVIDER_BUCKETS,
            registry=r,
        )
        self.cost = Counter(
            "imagegate_cost_usd",
            "Cost of generations at the catalog's prices (USD; unpriced ones add nothing)",
            ["model"],
            registry=r,
        )
        self.interrupted_calls = _interrupted_calls(r)
        self.rate_limit = Gauge(
            "imagegate_rate_limit_per_minute",
            "Configured rate limits per key or project (0: none), by scope and kind",
            ["scope", "kind"],
            registry=r,
            multiprocess_mode="max",  # the same settings in every worker
        )
        self.rate_limited = Counter(
            "imagegate_rate_limited",
            "Requests refused with 429 by a rate limit, by scope and kind",
            ["scope", "kind"],
            registry=r,
        )
        self.budget_refused = Counter(
            "imagegate_budget_exceeded",
            "Generations refused by a hard budget, by budget scope",
            ["scope"],
            registry=r,
        )

    def model_label(self, model: str) -> str:
        return model if model in self.models else OTHER_MODEL

    def generation(self, generation: Generation) -> None:
        """Record one finished generation."""
        label = self.model_label(generation.model)
        error_type = generation.error_type
        status = {None: "success", "partial_failure": "partial"}.get(error_type, "error")
        self.generations.labels(label, status).inc()
        if error_type is not None:
            self.errors.labels(label, error_type).inc()
        self.images.labels(label).inc(len(generation.images))
        self.provider_latency.labels(label).observe(generation.provider_seconds or 0.0)
        cost = generation.total_cost
        if cost is not None and cost > 0:
            self.cost.labels(label).inc(cost)

    def interrupted(self, count: int) -> None:
        self.interrupted_calls.inc(count)

    def render(self) -> bytes:
        return generate_latest(self.scraped)


class SharedMetrics:
    """Metrics shared by the processes of one server, in `<data dir>/metrics/<pid>` (the
    supervisor's pid). `enable` before forking the workers: every metric made afterwards,
    in any of them, is kept in the directory, and every scrape sums the directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @classmethod
    def enable(cls, data_dir: Path) -> SharedMetrics:
        parent = data_dir / "metrics"
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        for stale in parent.iterdir():  # left by a server that was killed
            if stale.name.isdigit() and not _alive(int(stale.name)):
                shutil.rmtree(stale, ignore_errors=True)
        directory = parent / str(os.getpid())
        shutil.rmtree(directory, ignore_errors=True)  # a reused pid's: not this server's
        directory.mkdir(mode=0o700)
        global _shared_directory
        _shared_directory = directory
        os.environ[SHARED_DIR_VARIABLE] = str(directory)  # for prometheus_client's files
        values.ValueClass = values.MultiProcessValue()
        return cls(directory)

    def count_interrupted(self, count: int) -> None:
        """Calls start-up recovery ended: counted once, here, not by every worker."""
        if count:
            _interrupted_calls(CollectorRegistry()).inc(count)

    def remove(self) -> None:
        values.close_all_multiprocess_files()
        values.ValueClass = values.MutexValue
        global _shared_directory
        _shared_directory = None
        os.environ.pop(SHARED_DIR_VARIABLE, None)
        shutil.rmtree(self.directory, ignore_errors=True)


def _alive(pid: int) -> bool:
    with contextlib.suppress(PermissionError):  # another user's process: alive
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
    return True


ROUTE_KEY = "imagegate.route"  # a holder in the scope, shared by copies of it


class MetricsMiddleware:
    """Counts every HTTP answer by method, route template and status.

    Outermost, so answers given before routing (a 413) count too. The route is read
    from what routing chose (`scope["route"]`), handed back by `_RouteRecorder`, the
    innermost middleware: scopes may be copied on the way in, the holder is shared.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server sends when the app fails before answering
        holder: dict[str, Any] = {}
        scope[ROUTE_KEY] = holder

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            method = scope["method"]
            route = str(getattr(holder.get("route"), "path", None) or UNMATCHED_ROUTE)
            self.metrics.http_requests.labels(method, route, str(status)).inc()
            self.metrics.http_duration.labels(method, route).observe(time.perf_counter() - started)


class _RouteRecorder:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            holder = scope.get(ROUTE_KEY)
            if holder is not None and "route" in scope:  # set by routing, in place
                holder["route"] = scope["route"]


def install(app: FastAPI, metrics: Metrics, token: str | None = None) -> None:
    """Serve `GET /metrics` and count requests; with a `token`, only to who sends it."""
    disable_created_metrics()  # no `_created` series: they double a scrape for no use here

    @app.get(
        "/metrics",
        tags=["Service"],
        response_class=PlainTextResponse,
        responses={
            200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}},
            401: {"description": "IMAGEGATE_METRICS_TOKEN is set and was not sent"},
        },
    )
    async def prometheus_metrics(request: Request) -> Response:
        """Prometheus metrics (text exposition format)."""
        if token is not None:
            scheme, _, sent = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                sent.strip().encode(), token.encode()
            ):
                return PlainTextResponse(
                    "metrics need Authorization: Bearer <IMAGEGATE_METRICS_TOKEN>\n",
                    status_code=401,
                    headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
                )
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    # Innermost (user middleware runs in list order) and outermost, respectively.
    app.user_middleware.append(Middleware(_RouteRecorder))
    app.add_middleware(MetricsMiddleware, metrics=metrics)
