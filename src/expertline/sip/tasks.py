"""A call's side toward the runtime: create its task, follow its status, report what the
call did. Every call into the ``TaskPort`` is bounded in time, and every answer (or failure)
is fed back to the call's flow as an event, which decides.

A runtime that is not taking work (stopping, starting, an HA standby) raises ``Unavailable``,
or its own error with the code ``unavailable``: the caller gets ``503`` either way.
"""

from __future__ import annotations

import asyncio
import logging

from expertline.errors import ExpertlineError, InvalidInput, NotFound
from expertline.runtime.ports import TaskPort, TaskView
from expertline.sip import calls
from expertline.sip.checks import REASON_MAX
from expertline.sip.registry import Call, Feed
from expertline.sip.task_request import RoutingRequest

log = logging.getLogger("expertline.sip")

WAIT_SLICE = 30.0  # seconds per long-poll of the task's status (re-armed until it changes)
PORT_TIMEOUT = 30.0  # bound on any one call into the runtime


class TaskLeg:
    def __init__(self, port: TaskPort, feed: Feed, wait_slice: float = WAIT_SLICE) -> None:
        self.port = port
        self.feed = feed
        self.wait_slice = wait_slice

    async def async_create(self, call: Call, routing: RoutingRequest) -> None:
        try:
            view, created = await asyncio.wait_for(
                self.port.async_create_task_ex(routing.task), PORT_TIMEOUT
            )
        except NotFound as exc:
            self.feed(call, calls.CreateFailed(404, f"Not Found ({exc.message})"[:REASON_MAX]))
            return
        except InvalidInput as exc:
            self.feed(call, calls.CreateFailed(400, f"Bad Request ({exc.message})"[:REASON_MAX]))
            return
        except ExpertlineError as exc:  # Unavailable, and the runtime's own "unavailable"
            if exc.code == "unavailable":
                log.warning("sip call refused call_id=%s reason=%s", call.call_id, exc.message)
            else:
                log.warning("sip task refused call_id=%s error=%s", call.call_id, exc.message)
            self.feed(call, calls.CreateFailed(503, "Service Unavailable"))
            return
        except TimeoutError:
            log.warning(
                "sip task creation timed out call_id=%s after=%ss", call.call_id, PORT_TIMEOUT
            )
            self.feed(call, calls.CreateFailed(503, "Service Unavailable"))
            return
        except Exception:
            log.exception("sip task creation failed call_id=%s", call.call_id)
            self.feed(call, calls.CreateFailed(500, "Server Internal Error"))
            return
        if not created and not routing.attach:
            # Another call (or a routing client) owns this external id: joining its task would
            # let this caller cancel it or receive its expert. Nothing was changed.
            log.warning(
                "sip refused a call whose external id is in use call_id=%s peer=%s status=403",
                call.call_id,
                call.peer,
            )
            self.feed(call, calls.CreateFailed(403, "Forbidden (external id already in use)"))
            return
        log.debug(
            "sip task %s call_id=%s task=%s status=%s",
            "created" if created else "attached",
            call.call_id,
            view.id,
            view.status,
        )
        self.feed(call, calls.TaskCreated(view))

    async def async_wait(self, call: Call, task_id: str, seen: str) -> None:
        """Feed the task's next status (``None`` after a slice without change); a failed wait
        is retried after a capped exponential backoff."""
        try:
            view = await asyncio.wait_for(
                self.port.async_wait_change(task_id, seen, self.wait_slice),
                self.wait_slice + PORT_TIMEOUT,
            )
        except Exception:
            call.wait_failures += 1
            delay = min(30.0, 0.5 * 2**call.wait_failures)
            log.exception(
                "sip task wait failed call_id=%s task=%s retry_in=%.1fs",
                call.call_id,
                task_id,
                delay,
            )
            await asyncio.sleep(delay)
            view = None
        else:
            call.wait_failures = 0
        self.feed(call, calls.TaskChanged(view))

    async def async_report(self, call: Call, report: calls.ReportEvent) -> None:
        task_id, type_ = report.task_id, report.type
        event = self.port.async_task_event(task_id, type_, report.disposition, report.handed_off)
        try:
            await asyncio.wait_for(event, PORT_TIMEOUT)
        except ExpertlineError as exc:
            log.info(
                "sip task event not applied call_id=%s task=%s event=%s reason=%s",
                call.call_id,
                task_id,
                type_,
                exc.message,
            )
        except Exception:
            log.exception("sip task event failed task=%s event=%s", task_id, type_)

    async def async_delivery_failed(self, call: Call, task_id: str, disposition: int) -> None:
        """The phone did not answer (19) or was busy (8): the runtime requeues the task; its
        new view goes back to the flow."""
        view: TaskView | None
        try:
            view = await asyncio.wait_for(
                self.port.async_delivery_failed(task_id, disposition), PORT_TIMEOUT
            )
        except ExpertlineError as exc:
            log.info("sip delivery failure not applied task=%s reason=%s", task_id, exc.message)
            view = self.port.task(task_id)
        except Exception:
            log.exception("sip delivery failure report failed task=%s", task_id)
            view = self.port.task(task_id)
        self.feed(call, calls.TaskChanged(view))
