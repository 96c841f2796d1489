"""Live state as the API shows it: an expert's and a queue's, from the core and the views."""

from __future__ import annotations

from typing import Any

from expertline.routing.model import RoutingConfig
from expertline.runtime import store
from expertline.runtime.core_adapter import CoreAdapter
from expertline.runtime.projection import WAITING_STATUSES
from expertline.runtime.views import CommittedViews


def expert_state(
    config: RoutingConfig, core: CoreAdapter, expert_id: str, open_offers: list[str]
) -> dict[str, Any] | None:
    spec = config.experts.get(expert_id)
    if spec is None:
        return None
    state = core.expert(expert_id)
    return {
        "id": expert_id,
        "name": spec.name,
        "presence": state.presence if state else "offline",
        "state": state.state if state else "offline",
        "active_tasks": list(state.tasks) if state else [],
        "max_tasks": spec.max_tasks,
        "open_offers": open_offers,
        "wrap_up_until": store.iso(state.wrap_up_until) if state else None,
        "enabled": spec.enabled,
    }


def queue_state(
    config: RoutingConfig, core: CoreAdapter, views: CommittedViews, queue_id: str, now: float
) -> dict[str, Any] | None:
    spec = config.queues.get(queue_id)
    if spec is None:
        return None
    waiting = [
        v for v in views.live.values() if v.queue == queue_id and v.status in WAITING_STATUSES
    ]
    oldest = min((v.extra.get("_created_ts", now) for v in waiting), default=None)
    members = config.matches.get(queue_id, (frozenset(),))
    eligible = sorted(set().union(*members)) if members else []
    available = [e for e in eligible if core.is_available(e)]
    return {
        "id": queue_id,
        "name": spec.name,
        "waiting": len(waiting),
        "waiting_tasks": [v.id for v in sorted(waiting, key=lambda v: v.created_at)][:100],
        "longest_wait": round(now - oldest, 3) if oldest is not None else 0.0,
        "eligible_experts": len(eligible),
        "available_experts": len(available),
        "available": available[:100],
    }
