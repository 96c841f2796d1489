"""The IM offer protocol (SPEC §5.3) with no I/O: texts out, replies in, and what they mean.

Three pure steps, shared by every IM adapter:

- **render**: offer / notice / accepted / withdrawn lines from the message set of the expert's
  locale (editable in the configuration, built-in defaults below);
- **parse**: an expert's free text into an ``Answer`` (yes/no, optional code, optional phone),
  an ``Ask`` (``help``, ``status``) or ``Unclear``; parsing never raises and never produces
  an accept unless the first word is a yes-word;
- **decide**: a parsed reply plus the expert's open offers into ``Accept``, ``Decline`` or
  ``Say`` (a line to send back and nothing else changes).

The adapter owns the network: it checks that the reply came from the bare JID the offers went
to, asks the routing port for that expert's open offers, calls ``decide`` and carries it out,
and renders the port's answer with ``answer_outcome``.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from expertline import visibility
from expertline.config.schema import DEFAULT_MESSAGES as BUILTIN_MESSAGES
from expertline.config.schema import MESSAGE_KEYS, ConfigDocument
from expertline.runtime.ports import AnswerResult, OfferView

# -- message sets --------------------------------------------------------------------------

#: Texts the configuration's message sets do not (yet) carry; English built-ins.
EXTRA_MESSAGES: Final[dict[str, str]] = {
    "no_offers": "You have no open offers.",
    "capacity": "#{code} cannot be accepted: you already have as many tasks as you can take.",
    "forbidden": "#{code} was not sent to you; nothing changed.",
    "phone_refused": "#{code} cannot go to {phone}: it is not one of your numbers. "
    "The offer is still open: answer yes {code} to take it on your own phone.",
    "cannot_decline": "#{code} cannot be declined; the call is coming to you.",
    "reason_taken": "another expert took it.",
    "reason_ended": "the request ended.",
    "reason_presence": "your status is no longer available.",
    "reason_timeout": "no answer in time.",
    "reason_overflow": "the request moved to another queue.",
    "reason_config": "the configuration changed.",
}
#: Withdrawal reasons the expert is not told about: ``reoffered`` (their offer timed out and
#: the same task was offered to them again at once; the new offer says enough).
SILENT_WITHDRAWALS: Final = frozenset({"reoffered"})
#: Every text with its built-in English default: the configuration's keys, then the extras.
DEFAULT_MESSAGES: Final[dict[str, str]] = {**BUILTIN_MESSAGES["en"], **EXTRA_MESSAGES}

YES_WORDS: Final = frozenset({"yes", "y", "accept"})
NO_WORDS: Final = frozenset({"no", "n", "decline"})
HELP_WORDS: Final = frozenset({"help", "?", "h"})
STATUS_WORDS: Final = frozenset({"status"})

MAX_REPLY_CHARS: Final = 300
_CODE = re.compile(r"#?([A-Za-z0-9]{1,16})")
_PHONE = re.compile(r"\+?[0-9][0-9().\-]{2,30}|(?:sips?|tel):[^\s]{1,120}", re.IGNORECASE)
_TRAILING = ".,;:!"


class _SafeFormatter(string.Formatter):
    """``str.format`` that leaves unknown ``{fields}`` as written instead of raising."""

    def get_value(self, key: int | str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        if isinstance(key, str) and key in kwargs:
            return kwargs[key]
        return "{" + str(key) + "}"


_FORMATTER = _SafeFormatter()


@dataclass(frozen=True)
class MessageSet:
    """The texts of one locale: configured templates over the built-in defaults."""

    locale: str
    templates: Mapping[str, str]

    @classmethod
    def build(cls, locale: str, overrides: Mapping[str, str] | None = None) -> MessageSet:
        """English defaults < the locale's built-in texts < configured texts."""
        merged = dict(DEFAULT_MESSAGES)
        merged.update(BUILTIN_MESSAGES.get(locale.split("-")[0], {}))
        merged.update(BUILTIN_MESSAGES.get(locale, {}))
        merged.update({k: v for k, v in (overrides or {}).items() if isinstance(v, str)})
        return cls(locale, merged)

    @classmethod
    def from_document(cls, document: ConfigDocument, locale: str) -> MessageSet:
        """The texts of ``locale`` as the configuration resolves them (configured, built-in,
        English), plus the built-in extras."""
        merged = dict(EXTRA_MESSAGES)
        merged.update({key: document.message(locale, key) for key in MESSAGE_KEYS})
        return cls(locale, merged)

    def render(self, key: str, **values: Any) -> str:
        """Fill a template; a broken configured template falls back to the built-in one."""
        template = self.templates.get(key, DEFAULT_MESSAGES.get(key, key))
        try:
            return _FORMATTER.format(template, **values)
        except (ValueError, IndexError, AttributeError, KeyError):
            return _FORMATTER.format(DEFAULT_MESSAGES.get(key, key), **values)


DEFAULT_SET: Final = MessageSet.build("en")


# -- attribute visibility ------------------------------------------------------------------


def apply_show(values: Mapping[str, Any], rules: Mapping[str, str]) -> dict[str, str]:
    """Attributes as an offer text may show them. The values have already been through the
    queue's rules (``RoutingPort`` offer views), so attributes without a rule stay shown."""
    return visibility.apply_show(values, rules, unlisted="visible")


# -- render --------------------------------------------------------------------------------


def format_wait(seconds: float) -> str:
    """``45s``, ``2m05s``, ``1h02m``: short enough for a chat line."""
    total = max(0, int(seconds))
    if total < 60:
        return f"{total}s"
    if total < 3600:
        return f"{total // 60}m{total % 60:02d}s"
    return f"{total // 3600}h{(total % 3600) // 60:02d}m"


def render_offer(
    offer: OfferView,
    messages: MessageSet,
    now: float,
    show: Mapping[str, str] | None = None,
) -> str:
    """The offer (or, for experts who may not decline, the notice) with its detail lines.

    ``offer.shown_attributes`` already went through the queue's ``show`` rules in the runtime;
    ``show`` re-applies them here (idempotent) and also covers the caller, so an adapter that
    knows the rules never shows more than they allow.
    """
    rules = show or {}
    caller = visibility.show_caller(offer.caller, rules) or "a withheld number"
    timeout = max(0, round(offer.expires_at - now)) if offer.expires_at is not None else 0
    first = messages.render(
        "notice" if offer.notice_only else "offer",
        code=offer.code,
        queue=offer.queue_name,
        caller=caller,
        waited=format_wait(now - offer.task_created_at),
        timeout=timeout,
    )
    attributes = apply_show(offer.shown_attributes, rules)
    lines = [_one_line(first)]
    lines += [f"{name}: {_one_line(value)}" for name, value in sorted(attributes.items())]
    return "\n".join(lines)


def render_accepted(offer: OfferView, messages: MessageSet, phone: str | None = None) -> str:
    return messages.render(
        "accepted",
        code=offer.code,
        queue=offer.queue_name,
        caller=offer.caller or "",
        phone=phone or "",
    )


def render_withdrawn(offer: OfferView, reason: str, messages: MessageSet) -> str:
    """``timeout`` has its own text (``timed_out``); other reasons fill ``{reason}``."""
    if reason == "timeout":
        return messages.render("timed_out", code=offer.code)
    key = f"reason_{reason}"
    why = messages.render(key) if key in messages.templates else reason
    return messages.render("withdrawn", code=offer.code, reason=why)


def _one_line(text: str) -> str:
    """The first line must stay the ``Offer #code:`` line; values never inject new lines."""
    return " ".join(text.split())


# -- parse ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """``yes``/``no``, with the code and (for yes) another phone number when given."""

    accept: bool
    code: str | None = None
    phone: str | None = None


@dataclass(frozen=True)
class Ask:
    command: Literal["help", "status"]


@dataclass(frozen=True)
class Unclear:
    why: str


Reply = Answer | Ask | Unclear


def parse_reply(text: str) -> Reply:
    """Read an expert's chat text. Never raises; only a leading yes-word can accept."""
    if len(text) > MAX_REPLY_CHARS:
        return Unclear("too long")
    tokens = text.split()
    if not tokens:
        return Unclear("empty")
    word = tokens[0].lower().rstrip(_TRAILING) or tokens[0].lower()
    rest = tokens[1:]
    if word in HELP_WORDS:
        return Ask("help")
    if word in STATUS_WORDS and not rest:
        return Ask("status")
    if word not in YES_WORDS and word not in NO_WORDS:
        return Unclear("not an answer")
    accept = word in YES_WORDS
    code: str | None = None
    phone: str | None = None
    if rest and accept and _is_phone(rest[0]) and not rest[0][:1].isdigit():
        phone, rest = rest[0], rest[1:]  # "yes +15551234567": the only open offer, another number
    elif rest:
        match = _CODE.fullmatch(rest[0].rstrip(_TRAILING) or rest[0])
        if match is None:
            return Unclear("bad code")
        code, rest = match.group(1).upper(), rest[1:]
        if rest and accept and _is_phone(rest[0]):
            phone, rest = rest[0], rest[1:]
    if rest:
        return Unclear("unexpected words")
    return Answer(accept, code, phone)


def _is_phone(token: str) -> bool:
    return _PHONE.fullmatch(token) is not None


# -- decide --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Accept:
    offer_id: str
    code: str
    phone: str | None = None


@dataclass(frozen=True)
class Decline:
    offer_id: str
    code: str


@dataclass(frozen=True)
class Say:
    """Send this line back; nothing else happens."""

    text: str


Decision = Accept | Decline | Say


def decide(
    reply: Reply,
    offers: Sequence[OfferView],
    messages: MessageSet,
    presence: str = "unknown",
    tasks: int | str = "unknown",
) -> Decision:
    """What an expert's reply means given their offers (this expert's only: open ones, and
    recently closed ones so a late answer gets the right line)."""
    open_offers = sorted((o for o in offers if o.status == "open"), key=lambda o: o.created_at)
    answerable = [o for o in open_offers if not o.notice_only]
    if isinstance(reply, Unclear):
        return Say(messages.render("help"))  # a short help line for anything else
    if isinstance(reply, Ask):
        if reply.command == "help":
            return Say(messages.render("help"))
        codes = ", ".join(f"#{o.code}" for o in open_offers) or "none"
        return Say(messages.render("status", presence=presence, offers=codes, tasks=tasks))
    if reply.code is not None:
        wanted = reply.code.upper()
        target = next((o for o in open_offers if o.code.upper() == wanted), None)
        if target is None:
            # An offer this expert had (timed out, taken, withdrawn) gets the "late" line.
            late = any(o.code.upper() == wanted for o in offers)
            return Say(messages.render("late_answer" if late else "unknown_code", code=reply.code))
    elif not answerable:
        return Say(messages.render("no_offers"))
    elif len(answerable) > 1:
        codes = ", ".join(f"#{o.code}" for o in answerable)
        return Say(messages.render("needs_code", codes=codes, count=len(answerable)))
    else:
        target = answerable[0]
    if target.notice_only:
        if reply.accept:
            return Say(render_accepted(target, messages))
        return Say(messages.render("cannot_decline", code=target.code))
    if reply.accept:
        return Accept(target.id, target.code, reply.phone)
    return Decline(target.id, target.code)


def answer_outcome(
    decision: Accept | Decline, result: AnswerResult, messages: MessageSet
) -> str | None:
    """The line to send after the runtime answered; None when the runtime speaks itself
    (a successful accept is confirmed by the runtime's ``Accepted #code``)."""
    if result.ok:
        if isinstance(decision, Accept):
            return None
        return messages.render("declined", code=decision.code)
    key = {
        "closed": "late_answer",
        "capacity": "capacity",
        "forbidden": "forbidden",
        "phone": "phone_refused",
    }.get(result.reason or "closed", "unknown_code")
    phone = decision.phone if isinstance(decision, Accept) else None
    return messages.render(key, code=decision.code, phone=phone or "")


# -- reply budget --------------------------------------------------------------------------


@dataclass
class ReplyBudget:
    """How many help lines an expert's unclear texts may trigger: ``burst`` at once, then one
    per ``every`` seconds. Stops reply loops with auto-responders ("I am away", bots) while a
    person who mistypes a few times still gets help. Answers (yes/no) are never limited."""

    burst: int = 3
    every: float = 20.0
    _spent: dict[str, tuple[float, float]] = field(default_factory=dict)  # who -> tokens, at

    def allow(self, who: str, now: float) -> bool:
        tokens, at = self._spent.get(who, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) / self.every)
        if tokens < 1.0:
            self._spent[who] = (tokens, now)
            return False
        self._spent[who] = (tokens - 1.0, now)
        if len(self._spent) > 10_000:  # bounded: forget the oldest
            del self._spent[next(iter(self._spent))]
        return True
