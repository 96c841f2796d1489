"""From a validated configuration document to the routing core's frozen view of it.

The core never sees YAML, pydantic models or CEL: it gets plain frozen specs and, per queue and
escalation step, the set of experts whose attributes match. Those sets come from an
``EligibilityIndex``; a runtime keeps one alive across versions so that a new version costs
only what changed (``EligibilityIndex.sync``) instead of a full evaluation.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from expertline.config.schema import ConfigDocument, Expert, Queue
from expertline.eligibility.index import EligibilityIndex
from expertline.routing.model import (
    EscalationStep,
    ExpertSpec,
    OnMaxWait,
    QueueSpec,
    RoutingConfig,
)

log = logging.getLogger(__name__)

NUMERIC_TYPES = ("proficiency", "number")


def build_routing_config(
    doc: ConfigDocument, version: int, index: EligibilityIndex | None = None
) -> RoutingConfig:
    """The core's view of ``doc`` as configuration ``version``.

    With ``index``, it is first brought in line with ``doc`` (only differing experts and
    queues are re-evaluated) and then reused; without, a fresh index is built.
    """
    started = time.perf_counter()
    if index is None:
        index = EligibilityIndex.from_document(doc)
        how = "built a fresh eligibility index"
    else:
        how = index.sync(doc)
    evaluated = time.perf_counter()
    numeric = [a.name for a in doc.attributes if a.type in NUMERIC_TYPES]
    floats: dict[Any, float] = {}  # one float object per distinct value: 100k experts share
    experts = {e.id: expert_spec(e, numeric, floats) for e in doc.experts}
    queues = {q.id: queue_spec(q) for q in doc.queues}
    matches = {q.id: index.matches(q.id) for q in doc.queues}
    entry_points = {ep.dialed_number: ep.queue for ep in doc.entry_points}
    sip_modes = {ep.dialed_number: ep.sip_mode for ep in doc.entry_points if ep.sip_mode}
    config = RoutingConfig(
        version=version,
        experts=experts,
        queues=queues,
        matches=matches,
        entry_points=entry_points,
        sip_modes=sip_modes,
    )
    log.info(
        "routing config built version=%d experts=%d queues=%d eligibility=%r "
        "eligibility_s=%.3f total_s=%.3f",
        version,
        len(experts),
        len(queues),
        how,
        evaluated - started,
        time.perf_counter() - started,
    )
    return config


def expert_spec(
    expert: Expert, numeric: list[str], floats: dict[Any, float] | None = None
) -> ExpertSpec:
    """``numbers`` holds every numeric attribute, absent ones at their default 0."""
    floats = {} if floats is None else floats
    zero = floats.setdefault(0, 0.0)
    numbers = dict.fromkeys(numeric, zero)
    for name, value in expert.attributes.items():
        if name in numbers:
            number = floats.get(value)
            if number is None:
                number = floats[value] = float(value)
            numbers[name] = number
    return ExpertSpec(
        id=expert.id,
        name=expert.name,
        phone=expert.phone,
        im=expert.im,
        max_tasks=expert.max_tasks,
        may_decline=expert.may_decline,
        enabled=expert.enabled,
        locale=expert.locale,
        phones=tuple(expert.phones),
        numbers=numbers,
    )


def queue_spec(queue: Queue) -> QueueSpec:
    """Durations are already seconds in the schema; ``offer_to: all`` becomes None."""
    omw = queue.on_max_wait
    return QueueSpec(
        id=queue.id,
        name=queue.name,
        order=queue.order,
        skill=queue.skill,
        offer_to=None if queue.offer_to == "all" else int(queue.offer_to),
        offer_timeout=queue.offer_timeout,
        max_wait=queue.max_wait,
        on_max_wait=OnMaxWait(omw.kind, omw.overflow if omw.kind == "overflow" else omw.label),
        wrap_up=queue.wrap_up,
        decline_cooldown=queue.decline_cooldown,
        max_no_answer=queue.max_no_answer,
        delivery_cooldown=queue.delivery_cooldown,
        max_delivery_failures=queue.max_delivery_failures,
        ring_timeout=queue.ring_timeout,
        service_level=queue.service_level,
        max_task_lifetime=queue.max_task_lifetime,
        priority=queue.priority,
        escalate=tuple(EscalationStep(after=step.after) for step in queue.escalate),
        accept_phones=queue.accept_phones,
    )
