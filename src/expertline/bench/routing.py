"""``expertline bench routing``: the routing core with durable persistence, and over HTTP.

Measures, on a synthetic configuration (experts over 1,000 queues, every expert available):
- full lifecycles per second (create -> offer -> accept -> connected -> ended) through the
  ``RuntimeService`` in-process with group commit on SQLite (``synchronous=FULL``), on the
  event loop a node runs on (uvloop);
- decision latency: core only (the routing core's perf helper) and durable (create submitted
  -> the task committed with its offers out);
- peak RSS with 10,000 tasks waiting at 100,000 experts;
- the same lifecycle through the HTTP API (uvicorn in a child process, httpx clients).
``options.scale`` shrinks every size and count.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from expertline.bench import perf
from expertline.bench.common import BenchOptions, BenchResult, current_rss_mb, percentile
from expertline.db import migrate
from expertline.db.engine import make_engine
from expertline.loops import loop_factory
from expertline.net import free_port
from expertline.routing.model import Presence, RoutingConfig
from expertline.runtime.ports import TaskRequest
from expertline.runtime.service import RuntimeService


def _sized(full: int, scale: float, floor: int = 100) -> int:
    return max(floor, int(full * scale))


def _service(url: str, config: RoutingConfig) -> RuntimeService:
    engine = make_engine(url)
    migrate.upgrade(engine)
    return RuntimeService(
        engine,
        node="bench",
        config_loader=lambda _e: (config, None),
        version_probe=lambda _e: config.version,
        config_poll=3600.0,
    )


async def _make_available(service: RuntimeService, config: RoutingConfig) -> None:
    ids = [e for e in config.experts if not e.startswith("b")]
    for start in range(0, len(ids), 2000):
        await asyncio.gather(
            *(service.async_set_presence(e, Presence.AVAILABLE) for e in ids[start : start + 2000])
        )


def _cpu_seconds() -> tuple[float, float]:
    """CPU seconds (user and system) used so far by this process and by its live children
    (the SQLite writer process)."""
    children = sum(sum(c.cpu_times()[:2]) for c in psutil.Process().children())
    return time.process_time(), children


async def _lifecycles(
    service: RuntimeService, queues: list[str], count: int, concurrency: int, max_seconds: float
) -> tuple[int, float, list[float]]:
    """Run ``count`` lifecycles with ``concurrency`` clients; returns (done, seconds, latencies)."""
    latencies: list[float] = []
    done = 0
    next_i = 0
    deadline = time.perf_counter() + max_seconds

    async def client() -> None:
        nonlocal done, next_i
        while next_i < count and time.perf_counter() < deadline:
            i = next_i
            next_i += 1
            t0 = time.perf_counter()
            view = await service.async_create_task(TaskRequest(queue=queues[i % len(queues)]))
            latencies.append(time.perf_counter() - t0)
            offers = view.extra.get("offers") or []
            if not offers:
                continue
            result = await service.async_accept(offers[0]["id"])
            if not result.ok:
                continue
            await service.async_task_event(view.id, "connected")
            await service.async_task_event(view.id, "ended")
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return done, time.perf_counter() - started, latencies


def _durable(
    result: BenchResult, options: BenchOptions, experts: int, target: float | None
) -> None:
    queues = _sized(1000, options.scale, 10)
    lifecycles = _sized(20_000, options.scale, 200)
    config = perf.synthetic_config(experts, queues, backlog_members=10)
    with tempfile.TemporaryDirectory() as tmp:
        url = options.db or f"sqlite:///{Path(tmp) / 'bench.db'}"

        async def go() -> tuple[int, float, list[float], int, tuple[float, float]]:
            service = _service(url, config)
            await service.async_start()
            try:
                await _make_available(service, config)
                qids = [q for q in config.queues if q != perf.BACKLOG]
                before = _cpu_seconds()
                done, seconds, lat = await _lifecycles(service, qids, lifecycles, 256, 60.0)
                after = _cpu_seconds()
                cpu = (after[0] - before[0], after[1] - before[1])
                return done, seconds, lat, service.commits, cpu
            finally:
                await service.async_stop()
                service.engine.dispose()

        with asyncio.Runner(loop_factory=loop_factory()) as runner:  # as a node runs
            done, seconds, lat, commits, (node_cpu, writer_cpu) = runner.run(go())
    backend = "sqlite synchronous=FULL" if not options.db else "given database"
    loop = "uvloop" if loop_factory() is not None else "asyncio loop"
    ctx = f"{experts:,} experts, {queues} queues, {backend}, 256 clients in-process on {loop}"
    result.add(
        f"durable lifecycles/s @{experts:,}",
        done / seconds if seconds else 0.0,
        "1/s",
        f">= {target}" if target else None,
        ctx,
    )
    result.add(
        f"durable create->offers p50 @{experts:,}", percentile(lat, 50) * 1000, "ms", None, ctx
    )
    result.add(
        f"durable create->offers p99 @{experts:,}", percentile(lat, 99) * 1000, "ms", None, ctx
    )
    per = 1e6 / done if done else 0.0
    result.add(
        f"durable CPU per lifecycle, node process @{experts:,}",
        node_cpu * per,
        "µs",
        None,
        "user + system, event loop and its threads, clients included",
    )
    result.add(
        f"durable CPU per lifecycle, writer process @{experts:,}",
        writer_cpu * per,
        "µs",
        None,
        "user + system of the SQLite writer process (0 on a database written by a thread)",
    )
    result.notes.append(
        f"{done} lifecycles in {seconds:.1f}s, {commits} commits @{experts:,} experts"
    )


def _waiting_rss(result: BenchResult, options: BenchOptions) -> None:
    experts = _sized(100_000, options.scale, 100)
    waiting = _sized(10_000, options.scale, 10)
    config = perf.synthetic_config(experts, _sized(1000, options.scale, 10), backlog_members=10)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"

        async def go() -> float:
            service = _service(url, config)
            await service.async_start()
            try:
                await _make_available(service, config)
                for start in range(0, waiting, 1000):
                    await asyncio.gather(
                        *(
                            service.async_create_task(TaskRequest(queue=perf.BACKLOG))
                            for _ in range(min(1000, waiting - start))
                        )
                    )
                return current_rss_mb()
            finally:
                await service.async_stop()
                service.engine.dispose()

        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            rss = runner.run(go())
    result.add(
        "RSS with tasks waiting",
        rss,
        "MiB",
        "<= 1024" if options.scale >= 1 else None,
        f"{waiting:,} waiting, {experts:,} experts available, durable service in-process",
    )


def _core_only(result: BenchResult, options: BenchOptions) -> None:
    experts = _sized(100_000, options.scale, 100)
    report = perf.run(
        experts=experts,
        queues=_sized(1000, options.scale, 10),
        lifecycles=_sized(20_000, options.scale, 200),
        max_seconds=60.0,
    )
    ctx = f"core only, {experts:,} experts, {report.queues} queues"
    result.add("core decision p50", report.decision_ms_p50, "ms", None, ctx)
    result.add("core decision p99", report.decision_ms_p99, "ms", "<= 2", ctx)
    result.add("core lifecycles/s", report.lifecycles_per_s, "1/s", None, ctx)


# --- over HTTP -------------------------------------------------------------------------------


def _serve_child(url: str, experts: int, queues: int, port: int, token_file: str) -> None:
    """Child process: a runtime with the synthetic configuration behind uvicorn.

    Runs on uvloop with the httptools parser and no access log, as a production node should,
    so the figure measures the application rather than the default pure-Python loop.
    """
    import uvicorn
    import uvloop

    from expertline.security.tokens import create_token
    from expertline.settings import Settings
    from expertline.web.app import AppContext, create_app

    config = perf.synthetic_config(experts, queues, backlog_members=10)

    async def main() -> None:
        service = _service(url, config)
        await service.async_start()
        await _make_available(service, config)
        ctx = AppContext(Settings(node="bench"), service.engine)
        ctx.services.runtime = service
        Path(token_file).write_text(create_token(service.engine, "bench", "admin"))
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(ctx),
                host="127.0.0.1",
                port=port,
                http="httptools",
                loop="none",
                lifespan="off",
                log_level="warning",
                access_log=False,
                timeout_keep_alive=120,
            )
        )
        await server.serve()
        await service.async_stop()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


def _http(result: BenchResult, options: BenchOptions) -> None:
    import httpx
    import psutil
    import uvloop

    experts = _sized(10_000, options.scale, 100)
    queues = _sized(1000, options.scale, 10)
    lifecycles = _sized(3000, options.scale, 100)
    clients = 128
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        token_file = str(Path(tmp) / "token")
        ctx = multiprocessing.get_context("spawn")
        child = ctx.Process(
            target=_serve_child, args=(url, experts, queues, port, token_file), daemon=True
        )
        child.start()
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                with contextlib.suppress(Exception):
                    if (
                        Path(token_file).exists()
                        and httpx.get(base + "/healthz").status_code == 200
                    ):
                        break
                time.sleep(0.2)
            headers = {"Authorization": f"Bearer {Path(token_file).read_text().strip()}"}
            server = psutil.Process(child.pid)
            server_cpu = sum(server.cpu_times()[:2])
            client_cpu = sum(os.times()[:2])
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                done, failed, seconds, lat = runner.run(
                    _http_clients(
                        base, headers, [f"q{i:04d}" for i in range(queues)], lifecycles, clients
                    )
                )
            client_cpu = sum(os.times()[:2]) - client_cpu
            server_cpu = sum(server.cpu_times()[:2]) - server_cpu
        finally:
            child.terminate()
            child.join(timeout=15)
            if child.is_alive():
                child.kill()
    ctx_text = (
        f"{experts:,} experts, uvicorn on uvloop in a child process, "
        f"{clients} aiohttp clients in one process, sqlite"
    )
    per = 1000 / done if done else 0.0
    rate = done / seconds if seconds else 0.0
    result.add("HTTP lifecycles/s", rate, "1/s", ">= 300", ctx_text)
    result.add("HTTP create p99", percentile(lat, 99) * 1000, "ms", None, ctx_text)
    result.add("HTTP server CPU per lifecycle", server_cpu * per, "ms", None, "4 requests")
    result.add("HTTP client CPU per lifecycle", client_cpu * per, "ms", None, "4 requests")
    result.notes.append(
        f"HTTP: {done} lifecycles ok, {failed} refused, in {seconds:.1f}s; "
        f"CPU server {server_cpu:.1f}s, client {client_cpu:.1f}s"
    )


async def _http_clients(
    base: str,
    headers: dict[str, str],
    queues: list[str],
    count: int,
    clients: int,
    max_seconds: float = 60.0,
) -> tuple[int, int, float, list[float]]:
    """The load generator: ``clients`` concurrent clients, each running whole lifecycles.

    Returns (lifecycles done, lifecycles refused, seconds, create latencies). A lifecycle
    counts only if every step answered with its documented success status. aiohttp's C parser
    keeps the client's CPU per request well below the server's (httpx spent more CPU per
    request than the server did), so the figure measures the server, not the load generator.
    """
    import aiohttp
    import orjson

    latencies: list[float] = []
    done = 0
    refused = 0
    errors = 0
    next_i = 0
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(
        base,
        headers={**headers, "Content-Type": "application/json"},
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=30),
    ) as session:

        async def post(path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
            async with session.post(path, data=None if body is None else orjson.dumps(body)) as r:
                return r.status, orjson.loads(await r.read())

        async def lifecycle(i: int) -> bool:
            t0 = time.perf_counter()
            status, task = await post("/api/v1/tasks", {"queue": queues[i % len(queues)]})
            latencies.append(time.perf_counter() - t0)
            if status != 201 or not task.get("offers"):
                return False
            status, _ = await post(f"/api/v1/offers/{task['offers'][0]['id']}/accept")
            if status != 200:
                return False
            events = f"/api/v1/tasks/{task['id']}/events"
            status, _ = await post(events, {"type": "connected"})
            if status != 200:
                return False
            status, _ = await post(events, {"type": "ended"})
            return status == 200

        deadline = time.perf_counter() + max_seconds

        async def client() -> None:
            nonlocal done, refused, next_i, errors
            while next_i < count and time.perf_counter() < deadline:
                i = next_i
                next_i += 1
                try:
                    ok = await lifecycle(i)
                except (aiohttp.ClientError, TimeoutError):
                    errors += 1
                    continue
                if ok:  # counted after the await: `done += await ...` would lose updates
                    done += 1
                else:
                    refused += 1

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        seconds = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{errors} of {count} HTTP lifecycles failed with transport errors")
    return done, refused, seconds, latencies


def run(options: BenchOptions) -> BenchResult:
    result = BenchResult("routing")
    result.notes.append(f"cpus={os.cpu_count()} scale={options.scale}")
    sections: list[tuple[str, Any]] = [
        ("core", lambda: _core_only(result, options)),
        ("durable10k", lambda: _durable(result, options, _sized(10_000, options.scale), 2000)),
        ("durable100k", lambda: _durable(result, options, _sized(100_000, options.scale), None)),
        ("rss", lambda: _waiting_rss(result, options)),
        ("http", lambda: _http(result, options)),
    ]
    options.check_sections([name for name, _ in sections])
    for name, section in sections:
        if not options.selected(name):
            continue
        started = time.perf_counter()
        try:
            section()
        except Exception as exc:  # one failed section must not lose the others' figures
            result.notes.append(f"{name}: failed: {type(exc).__name__}: {exc}")
        else:
            result.notes.append(f"{name}: {time.perf_counter() - started:.0f}s")
    load = os.getloadavg()[0]
    result.notes.append(f"load average at the end: {load:.1f} on {os.cpu_count()} cpus")
    return result
