"""The ``messages`` section: the IM texts experts get, per locale, and the built-in ones."""

from __future__ import annotations

import string
from typing import ClassVar

from pydantic import Field, ValidationInfo, field_validator

from expertline.config.schema.fields import StrictModel


class MessageSet(StrictModel):
    """IM texts for one locale. Unset texts fall back to the built-in ones (then to English).

    Each text may use the ``{placeholders}`` listed in ``PLACEHOLDERS``.
    """

    offer: str | None = Field(default=None, description="First line of an offer.")
    accepted: str | None = Field(default=None, description="Reply when the expert wins a task.")
    withdrawn: str | None = Field(default=None, description="An open offer is withdrawn.")
    declined: str | None = Field(default=None, description="Reply to a decline.")
    timed_out: str | None = Field(default=None, description="An offer timed out unanswered.")
    late_answer: str | None = Field(
        default=None, description="Answer to an offer that is no longer open."
    )
    unknown_code: str | None = Field(default=None, description="Answer naming no open offer.")
    needs_code: str | None = Field(
        default=None, description="Answer without a code while several offers are open."
    )
    set_away: str | None = Field(
        default=None, description="The expert was set away after max_no_answer misses."
    )
    phone_failed: str | None = Field(
        default=None,
        description="The expert was set away after max_delivery_failures failed calls.",
    )
    notice: str | None = Field(
        default=None,
        description="First line of a task assigned without a question (may_decline: false).",
    )
    help: str | None = Field(default=None, description="Reply to `help` and to unknown text.")
    status: str | None = Field(default=None, description="Reply to `status`.")
    failover: str | None = Field(default=None, description="Routing moved to the other node.")

    PLACEHOLDERS: ClassVar[dict[str, frozenset[str]]] = {
        "offer": frozenset({"code", "queue", "caller", "waited", "timeout"}),
        "accepted": frozenset({"code", "queue", "caller", "phone"}),
        "withdrawn": frozenset({"code", "reason"}),
        "declined": frozenset({"code"}),
        "timed_out": frozenset({"code"}),
        "late_answer": frozenset({"code"}),
        "unknown_code": frozenset({"code"}),
        "needs_code": frozenset({"codes"}),
        "set_away": frozenset({"count"}),
        "phone_failed": frozenset({"count"}),
        "notice": frozenset({"code", "queue", "caller", "waited"}),
        "help": frozenset(),
        "status": frozenset({"presence", "offers", "tasks"}),
        "failover": frozenset(),
    }

    @field_validator("*")
    @classmethod
    def _placeholders(cls, text: str | None, info: ValidationInfo) -> str | None:
        allowed = cls.PLACEHOLDERS.get(str(info.field_name))
        if text is None or allowed is None:
            return text
        try:
            used = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
        except ValueError as exc:
            raise ValueError(
                f"bad template ({exc}); write {{{{ or }}}} for a literal brace"
            ) from exc
        unknown = sorted(used - allowed)
        if unknown:
            known = ", ".join("{" + k + "}" for k in sorted(allowed)) or "none"
            raise ValueError(f"unknown placeholder {{{unknown[0]}}} (available: {known})")
        return text


#: The built-in texts. ``en`` is complete; other locales fall back to it key by key.
DEFAULT_MESSAGES: dict[str, dict[str, str]] = {
    "en": {
        "offer": "Offer #{code}: {queue} call from {caller}, waiting {waited}. "
        "Reply yes or no ({timeout}s).",
        "accepted": "Accepted #{code}: please stand by for the call.",
        "withdrawn": "Withdrawn #{code}: {reason}",
        "declined": "Declined #{code}. Thank you.",
        "timed_out": "Timed out #{code}: the offer went to someone else.",
        "late_answer": "#{code} is no longer open; nothing changed.",
        "unknown_code": "No open offer #{code}; nothing changed.",
        "needs_code": "Several offers are open ({codes}): answer with the code, e.g. yes 1234.",
        "set_away": "You missed {count} offers in a row, so your status is now away.",
        "phone_failed": "Calls to your phone failed {count} times in a row, so your status is "
        "now away. Check your phone, then set yourself available again.",
        "notice": "Offer #{code}: {queue} call from {caller}, waiting {waited}. "
        "It is coming to you now; no reply needed.",
        "help": "Answer an offer with yes or no (add the code when several are open: yes 1234). "
        "yes 1234 +15551234567 takes the call on another number. Commands: help, status.",
        "status": "You are {presence}; open offers: {offers}; tasks: {tasks}.",
        "failover": "Routing moved to the backup node; your status is kept.",
    },
    "es": {
        "offer": "Oferta #{code}: llamada de {caller} para {queue}, esperando {waited}. "
        "Responda sí o no ({timeout}s).",
        "accepted": "Aceptada #{code}: espere la llamada, por favor.",
        "withdrawn": "Retirada #{code}: {reason}",
        "declined": "Rechazada #{code}. Gracias.",
        "timed_out": "Expirada #{code}: la oferta pasó a otra persona.",
        "late_answer": "#{code} ya no está abierta; no cambió nada.",
        "unknown_code": "No hay oferta abierta #{code}; no cambió nada.",
        "needs_code": "Hay varias ofertas abiertas ({codes}): responda con el código, p. ej. yes 1234.",
        "set_away": "No respondió {count} ofertas seguidas; su estado es ahora ausente.",
        "phone_failed": "Las llamadas a su teléfono fallaron {count} veces seguidas; su estado "
        "es ahora ausente. Revise su teléfono y vuelva a ponerse disponible.",
        "notice": "Oferta #{code}: llamada de {caller} para {queue}, esperando {waited}. "
        "Le llega ahora; no hace falta responder.",
        "help": "Responda a una oferta con yes o no (con el código si hay varias: yes 1234). "
        "yes 1234 +15551234567 recibe la llamada en otro número. Comandos: help, status.",
        "status": "Su estado: {presence}; ofertas abiertas: {offers}; tareas: {tasks}.",
        "failover": "El enrutamiento pasó al nodo de respaldo; su estado se mantiene.",
    },
}
MESSAGE_KEYS: tuple[str, ...] = tuple(MessageSet.PLACEHOLDERS)
