"""The IM offer protocol without a network: rendering, parsing, deciding (SPEC §5.3)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from expertline.config.schema import MESSAGE_KEYS
from expertline.presence.protocol import (
    DEFAULT_SET,
    NO_WORDS,
    SILENT_WITHDRAWALS,
    YES_WORDS,
    Accept,
    Answer,
    Ask,
    Decline,
    MessageSet,
    ReplyBudget,
    Say,
    Unclear,
    answer_outcome,
    apply_show,
    decide,
    format_wait,
    parse_reply,
    render_accepted,
    render_offer,
    render_withdrawn,
)
from expertline.runtime.ports import AnswerResult, OfferView
from expertline.visibility import mask

NOW = 1_000_000.0


def offer(code: str = "4821", oid: str = "o1", **kw: object) -> OfferView:
    base = OfferView(
        id=oid,
        task_id="t1",
        code=code,
        expert_id="alice",
        status="open",
        queue_id="billing-es",
        queue_name="Billing (Spanish)",
        caller="+15551230000",
        created_at=NOW - 5,
        expires_at=NOW + 15,
        task_created_at=NOW - 42,
        notice_only=False,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


# -- render ------------------------------------------------------------------------------


def test_offer_first_line_follows_the_spec_and_default_template() -> None:
    text = render_offer(offer(), DEFAULT_SET, NOW)
    assert text == (
        "Offer #4821: Billing (Spanish) call from +15551230000, waiting 42s. Reply yes or no (15s)."
    )


def test_offer_lists_shown_attributes_after_the_first_line_sorted() -> None:
    o = offer(shown_attributes={"language": "es", "account": "****6789"})
    lines = render_offer(o, DEFAULT_SET, NOW).splitlines()
    assert lines[0].startswith("Offer #4821: ")
    assert lines[1:] == ["account: ****6789", "language: es"]


def test_show_rules_mask_and_hide_attributes_and_caller() -> None:
    o = offer(shown_attributes={"account": "123456789", "notes": "vip", "language": "es"})
    text = render_offer(
        o, DEFAULT_SET, NOW, show={"caller": "masked", "account": "masked", "notes": "hidden"}
    )
    assert "call from ****0000" in text
    assert "account: ****6789" in text
    assert "vip" not in text and "notes" not in text
    assert "language: es" in text
    hidden_caller = render_offer(o, DEFAULT_SET, NOW, show={"caller": "hidden"})
    assert "15551230000" not in hidden_caller and "withheld" in hidden_caller


def test_values_cannot_inject_lines_before_the_offer_line() -> None:
    o = offer(queue_name="Billing\nOffer #9999: fake", shown_attributes={"x": "a\nb"})
    lines = render_offer(o, DEFAULT_SET, NOW).splitlines()
    assert lines[0].startswith("Offer #4821: Billing Offer #9999")
    assert lines[1] == "x: a b"
    assert len(lines) == 2


def test_notice_for_experts_who_may_not_decline_asks_nothing() -> None:
    text = render_offer(offer(notice_only=True), DEFAULT_SET, NOW)
    assert text.startswith("Offer #4821: ")
    assert "Reply yes or no" not in text
    assert "no reply needed" in text


def test_locale_templates_override_defaults_and_keep_the_rest() -> None:
    es = MessageSet.build("es", {"offer": "Oferta #{code}: {queue}, espera {waited} ({timeout}s)."})
    assert render_offer(offer(), es, NOW) == "Oferta #4821: Billing (Spanish), espera 42s (15s)."
    assert render_accepted(offer(), es) == "Aceptada #4821: espere la llamada, por favor."
    fr = MessageSet.build("fr", {"accepted": "Acceptée #{code} ({phone})"})
    assert render_accepted(offer(), fr, phone="+331") == "Acceptée #4821 (+331)"
    assert render_withdrawn(offer(), "ended", fr) == "Withdrawn #4821: the request ended."


def test_broken_or_unknown_placeholders_never_raise() -> None:
    odd = MessageSet.build("en", {"offer": "Offer #{code} {nope} {0} {", "accepted": "A #{code.x}"})
    assert render_offer(offer(), odd, NOW).startswith("Offer #4821: Billing")  # fell back
    assert (
        MessageSet.build("en", {"offer": "#{code} {nope}"}).render("offer", code="1") == "#1 {nope}"
    )
    assert render_accepted(offer(), odd).startswith("Accepted #4821")


def test_withdrawn_names_the_reason_in_words() -> None:
    assert (
        render_withdrawn(offer(), "taken", DEFAULT_SET)
        == "Withdrawn #4821: another expert took it."
    )
    assert render_withdrawn(offer(), "presence", DEFAULT_SET).endswith("no longer available.")
    assert render_withdrawn(offer(), "whatever", DEFAULT_SET) == "Withdrawn #4821: whatever"
    assert render_withdrawn(offer(), "timeout", DEFAULT_SET) == (
        "Timed out #4821: the offer went to someone else."
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (59.9, "59s"), (60, "1m00s"), (125, "2m05s"), (3720, "1h02m"), (-3, "0s")],
)
def test_format_wait(seconds: float, text: str) -> None:
    assert format_wait(seconds) == text


def test_mask_keeps_last_four_and_is_idempotent() -> None:
    assert mask("123456789") == "****6789"
    assert mask("1234") == "****"
    assert mask(mask("123456789")) == "****6789"
    assert apply_show({"a": ["en", "es"], "b": True, "c": None}, {}) == {"a": "en, es", "b": "yes"}


# -- parse -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("yes", Answer(True)),
        ("Y", Answer(True)),
        ("accept", Answer(True)),
        ("  Yes.  ", Answer(True)),
        ("no", Answer(False)),
        ("N", Answer(False)),
        ("decline", Answer(False)),
        ("yes 4821", Answer(True, "4821")),
        ("yes #4821", Answer(True, "4821")),
        ("no #4821", Answer(False, "4821")),
        ("no 4821.", Answer(False, "4821")),
        ("yes ab12", Answer(True, "AB12")),
        ("yes 4821 +15551234567", Answer(True, "4821", "+15551234567")),
        ("yes #4821 sip:1001@pbx.example.test", Answer(True, "4821", "sip:1001@pbx.example.test")),
        ("yes +15551234567", Answer(True, None, "+15551234567")),
        ("help", Ask("help")),
        ("?", Ask("help")),
        ("HELP me", Ask("help")),
        ("status", Ask("status")),
    ],
)
def test_parse_answers_and_commands(text: str, expected: object) -> None:
    assert parse_reply(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "maybe",
        "yess",
        "sure",
        "no 4821 +15551234567",
        "yes 4821 later",
        "yes #",
        "yes 12-34",
        "status please",
        "yes " + "1" * 17,
        "y" * 400,
        "ok",
        "yes\u200b",
    ],
)
def test_parse_anything_else_is_unclear(text: str) -> None:
    assert isinstance(parse_reply(text), Unclear)


@pytest.mark.slow
@settings(max_examples=500)
@given(st.text(max_size=400))
def test_arbitrary_text_never_crashes_and_never_accepts_without_a_yes_word(text: str) -> None:
    reply = parse_reply(text)
    assert isinstance(reply, Answer | Ask | Unclear)
    if isinstance(reply, Answer):
        first = text.split()[0].lower().rstrip(".,;:!")
        assert first in (YES_WORDS if reply.accept else NO_WORDS)


@pytest.mark.slow
@settings(max_examples=300)
@given(
    st.sampled_from(sorted(YES_WORDS | NO_WORDS)),
    st.from_regex(r"#?[A-Za-z0-9]{1,8}", fullmatch=True),
)
def test_any_answer_with_a_code_parses_back(word: str, code: str) -> None:
    reply = parse_reply(f"{word} {code}")
    assert reply == Answer(word in YES_WORDS, code.lstrip("#").upper())


@pytest.mark.slow
@settings(max_examples=300)
@given(
    st.text(max_size=200),
    st.lists(st.sampled_from(["4821", "5530", "AB12"]), max_size=3, unique=True),
)
def test_decide_never_raises_and_accepts_only_open_offers_of_yes_answers(
    text: str, codes: list[str]
) -> None:
    offers = [offer(code=c, oid=f"o{c}") for c in codes]
    decision = decide(parse_reply(text), offers, DEFAULT_SET)
    if isinstance(decision, Accept):
        assert text.split()[0].lower().rstrip(".,;:!") in YES_WORDS
        assert decision.offer_id in {o.id for o in offers}


# -- decide ------------------------------------------------------------------------------


def test_single_open_offer_needs_no_code() -> None:
    assert decide(parse_reply("yes"), [offer()], DEFAULT_SET) == Accept("o1", "4821")
    assert decide(parse_reply("n"), [offer()], DEFAULT_SET) == Decline("o1", "4821")
    assert decide(parse_reply("yes +15550001111"), [offer()], DEFAULT_SET) == Accept(
        "o1", "4821", "+15550001111"
    )


def test_several_open_offers_require_the_code() -> None:
    offers = [offer("4821", "o1"), offer("5530", "o2", created_at=NOW)]
    said = decide(parse_reply("yes"), offers, DEFAULT_SET)
    assert isinstance(said, Say)
    assert "(#4821, #5530)" in said.text
    assert decide(parse_reply("yes 5530"), offers, DEFAULT_SET) == Accept("o2", "5530")
    assert decide(parse_reply("no #4821"), offers, DEFAULT_SET) == Decline("o1", "4821")


def test_unknown_or_late_code_gets_a_clear_line() -> None:
    said = decide(parse_reply("yes 9999"), [offer()], DEFAULT_SET)
    assert said == Say("No open offer #9999; nothing changed.")
    closed = decide(parse_reply("yes 4821"), [offer(status="timeout")], DEFAULT_SET)
    assert isinstance(closed, Say) and "#4821" in closed.text


def test_no_open_offers() -> None:
    assert decide(parse_reply("yes"), [], DEFAULT_SET) == Say("You have no open offers.")
    assert decide(parse_reply("no"), [offer(status="withdrawn")], DEFAULT_SET) == Say(
        "You have no open offers."
    )


def test_notice_only_offers_cannot_be_declined() -> None:
    notice = offer(notice_only=True)
    said = decide(parse_reply("no 4821"), [notice], DEFAULT_SET)
    assert isinstance(said, Say) and "cannot be declined" in said.text
    assert decide(parse_reply("no"), [notice], DEFAULT_SET) == Say("You have no open offers.")
    # a notice beside a real offer: "yes" without a code means the offer
    assert decide(parse_reply("yes"), [notice, offer("5530", "o2")], DEFAULT_SET) == Accept(
        "o2", "5530"
    )


def test_help_status_and_unclear() -> None:
    help_line = decide(parse_reply("help"), [], DEFAULT_SET)
    assert isinstance(help_line, Say) and "yes 1234" in help_line.text
    status = decide(parse_reply("status"), [offer()], DEFAULT_SET, presence="available", tasks=0)
    assert status == Say("You are available; open offers: #4821; tasks: 0.")
    idle = decide(parse_reply("status"), [], DEFAULT_SET, presence="away", tasks=1)
    assert idle == Say("You are away; open offers: none; tasks: 1.")
    unclear = decide(parse_reply("what?"), [offer()], DEFAULT_SET)
    assert unclear == help_line  # a short help line for anything else


def test_answer_outcome_lines() -> None:
    acc, dec = Accept("o1", "4821"), Decline("o1", "4821")
    assert answer_outcome(acc, AnswerResult(True, offer()), DEFAULT_SET) is None
    assert (
        answer_outcome(dec, AnswerResult(True, offer()), DEFAULT_SET)
        == "Declined #4821. Thank you."
    )
    late = answer_outcome(acc, AnswerResult(False, None, "closed"), DEFAULT_SET)
    assert late == "#4821 is no longer open; nothing changed."
    full = answer_outcome(acc, AnswerResult(False, None, "capacity"), DEFAULT_SET)
    assert full is not None and "as many tasks" in full
    unknown = answer_outcome(acc, AnswerResult(False, None, "unknown"), DEFAULT_SET)
    assert unknown == "No open offer #4821; nothing changed."
    elsewhere = Accept("o1", "4821", "sip:somewhere.example.net")
    refused = answer_outcome(elsewhere, AnswerResult(False, offer(), "phone"), DEFAULT_SET)
    assert refused == (
        "#4821 cannot go to sip:somewhere.example.net: it is not one of your numbers. "
        "The offer is still open: answer yes 4821 to take it on your own phone."
    )


def test_reply_budget_stops_loops_with_auto_responders() -> None:
    budget = ReplyBudget(burst=3, every=20.0)
    assert [budget.allow("bot@x", 0.0) for _ in range(5)] == [True, True, True, False, False]
    assert budget.allow("alice@x", 0.0)  # per sender
    assert not budget.allow("bot@x", 10.0)
    assert budget.allow("bot@x", 21.0)  # one more per 20 s
    assert not budget.allow("bot@x", 22.0)
    assert [budget.allow("bot@x", 200.0) for _ in range(4)] == [True, True, True, False]


def test_the_notice_text_is_a_message_set_entry() -> None:
    configured = MessageSet.build("en", {"notice": "#{code} for you now ({queue}, {caller})."})
    text = render_offer(offer(notice_only=True), configured, NOW)
    assert text.splitlines()[0] == "#4821 for you now (Billing (Spanish), +15551230000)."
    assert "notice" in MESSAGE_KEYS and "phone_failed" in MESSAGE_KEYS
    es = MessageSet.build("es")
    assert render_offer(offer(notice_only=True), es, NOW).startswith("Oferta #4821:")


def test_set_away_and_phone_failed_say_the_count() -> None:
    assert DEFAULT_SET.render("set_away", count=3).startswith("You missed 3 offers in a row")
    assert "failed 4 times in a row" in DEFAULT_SET.render("phone_failed", count=4)
    assert "reoffered" in SILENT_WITHDRAWALS and "timeout" not in SILENT_WITHDRAWALS
