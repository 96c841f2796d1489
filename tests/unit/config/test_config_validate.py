"""Document validation: every problem at once, each named by its YAML path."""

from __future__ import annotations

from pathlib import Path

import pytest

from expertline.config.cel import SelectionCompiler
from expertline.config.schema import (
    ConfigDocument,
    Queue,
    format_duration,
    parse_duration,
)
from expertline.config.validate import check_yaml, load_yaml, validate_document
from expertline.errors import InvalidInput

DEMO = Path(__file__).parents[3] / "examples" / "demo.yaml"

BASE = """
attributes:
  - {name: billing, type: proficiency}
  - {name: language, type: list, values: [en, es, fr]}
  - {name: certified, type: boolean}
  - {name: seniority, type: number}
  - {name: site, type: string}
experts:
  - {id: alice, name: Alice, phone: "sip:1@pbx.example.test", im: alice@example.test,
     attributes: {billing: 80, language: [en, es], certified: true, seniority: 3}}
  - {id: bob, name: Bob, phone: "sip:2@pbx.example.test"}
queues:
  - {id: billing-es, name: Billing ES, select: "billing >= 50 && 'es' in language",
     on_max_wait: {overflow: billing-any}}
  - {id: billing-any, name: Billing, select: "billing >= 1"}
entry_points:
  - {dialed_number: "+18005550100", queue: billing-es}
presence:
  - {id: corp, kind: xmpp, jid: router@example.test, password_env: XMPP_PASSWORD}
"""


def problems_of(text: str) -> list[str]:
    doc, problems = check_yaml(text)
    assert doc is None
    return [str(p) for p in problems]


def test_the_base_document_and_the_demo_are_valid() -> None:
    doc = load_yaml(BASE)
    assert [e.id for e in doc.experts] == ["alice", "bob"]
    demo = load_yaml(DEMO.read_text())
    assert len(demo.experts) >= 6 and len(demo.queues) == 3
    assert {q.order for q in demo.queues} >= {"most_skilled", "longest_idle", "closest_match"}
    assert "es" in demo.messages


def test_five_mistakes_give_five_path_named_problems() -> None:
    text = (
        BASE.replace("seniority: 3}", "seniority: 3, shoe_size: 42}")  # unknown attribute
        .replace("billing >= 1", "billing >= 1.5")  # CEL type error
        .replace("queue: billing-es}", "queue: billing-fr}")  # bad reference
        .replace("{id: bob,", "{id: alice,")  # duplicate id
        .replace("kind: xmpp,", "kind: xmpp, password: hunter2,")  # unknown key (no secrets)
    )
    assert problems_of(text) == [
        "experts[0].attributes.shoe_size: unknown attribute",
        "experts[1].id: duplicate 'alice' (first at experts[0])",
        "queues[1].select: column 9: found no matching overload for '_>=_' applied to '(int, double)'",
        "entry_points[0].queue: no such queue (known: billing-es, billing-any)",
        "presence[0].password: unknown key",
    ]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "billing: 80",
            "billing: 101",
            "experts[0].attributes.billing: proficiency 101 is out of range 1..100",
        ),
        (
            "billing: 80",
            "billing: '80'",
            "experts[0].attributes.billing: expected a proficiency from 1 to 100, got '80'",
        ),
        ("[en, es]", "[en, de]", "experts[0].attributes.language: 'de' is not one of [en, es, fr]"),
        (
            "certified: true",
            "certified: yes",
            "experts[0].attributes.certified: expected true or false, got 'yes'",
        ),
        (
            "seniority: 3",
            "seniority: many",
            "experts[0].attributes.seniority: expected a number, got 'many'",
        ),
        (
            "{id: bob,",
            "{id: bob, max_tasks: 0,",
            "experts[1].max_tasks: Input should be greater than or equal to 1",
        ),
        (
            "{id: bob,",
            "{id: 'bob smith',",
            "experts[1].id: 'bob smith' has characters that are not allowed",
        ),
        ("{id: bob, name: Bob,", "{id: bob,", "experts[1].name: required"),
        (
            "{overflow: billing-any}",
            "{overflow: nowhere}",
            "queues[0].on_max_wait.overflow: no such queue (known: billing-es, billing-any)",
        ),
        (
            "{overflow: billing-any}",
            "{overflow: billing-es}",
            "queues[0].on_max_wait.overflow: overflows to itself",
        ),
        (
            "{overflow: billing-any}",
            "maybe",
            "queues[0].on_max_wait: expected reject, {overflow: QUEUE} or {label: LABEL}, got 'maybe'",
        ),
        (
            'select: "billing >= 1"',
            'select: "billing >= 1", on_max_wait: {overflow: billing-es}',
            "queues[1].on_max_wait.overflow: overflow loop: billing-es -> billing-any -> billing-es",
        ),
        (
            'select: "billing >= 1"',
            'select: "billing"',
            "queues[1].select: must be boolean, but is int",
        ),
        (
            'select: "billing >= 1"',
            'select: "salary > 1"',
            "queues[1].select: column 1: undeclared reference to 'salary'",
        ),
        (
            'select: "billing >= 1"',
            'select: "billing >="',
            "queues[1].select: column 11: Syntax error: mismatched input '<EOF>'",
        ),
        (
            'select: "billing >= 1"',
            'select: "billing >= 1", order: most_skilled',
            "queues[1].skill: required when order is most_skilled",
        ),
        (
            'select: "billing >= 1"',
            'select: "billing >= 1", skill: site',
            "queues[1].skill: 'site' is a string; needs a numeric one",
        ),
        (
            'select: "billing >= 1"',
            'select: "billing >= 1", skill: wage',
            "queues[1].skill: no such attribute",
        ),
        (
            'select: "billing >= 1"',
            'select: "billing >= 1", offer_timeout: 20 s',
            "queues[1].offer_timeout: bad duration '20 s'",
        ),
        (
            'select: "billing >= 1"',
            'select: "billing >= 1", offer_to: 0',
            "queues[1].offer_to: expected a number of experts from 1 to 1000, or all; got 0",
        ),
        (
            'select: "billing >= 1"',
            "select: \"billing >= 1\", escalate: [{after: 1m, select: 'true'}, {after: 30s, select: 'true'}]",
            "queues[1].escalate: escalation steps must have strictly increasing `after`",
        ),
        (
            'select: "billing >= 1"',
            "select: \"billing >= 1\", escalate: [{after: 1m, select: 'billing > 0.5'}]",
            "queues[1].escalate[0].select: column 9",
        ),
        (
            "{id: billing-any,",
            "{id: billing-es,",
            "queues[1].id: duplicate 'billing-es' (first at queues[0])",
        ),
        (
            '"+18005550100"',
            "18005550100",
            "entry_points[0].dialed_number: expected text, got the number 18005550100 (quote it)",
        ),
        (
            "password_env: XMPP_PASSWORD",
            "password_env: 'not a name'",
            "presence[0].password_env: 'not a name' has characters that are not allowed",
        ),
        (
            "jid: router@example.test, password_env: XMPP_PASSWORD",
            "jid: router@example.test",
            "presence[0]: account mode needs password_env (or use component mode)",
        ),
        (
            "password_env: XMPP_PASSWORD}",
            "password_env: XMPP_PASSWORD, links: [{password_env: XMPP_PASSWORD}]}",
            "presence[0].links[0]: account mode needs jid (or use component mode)",
        ),
        (
            "{name: certified, type: boolean}",
            "{name: certified, type: boolean, values: [a]}",
            "attributes[2]: `values` is only for list attributes, not boolean",
        ),
        (
            "{name: site, type: string}",
            "{name: in, type: string}",
            "attributes[4].name: 'in' is a reserved word in CEL",
        ),
        (
            "{name: site, type: string}",
            "{name: billing, type: number}",
            "attributes[4].name: duplicate 'billing' (first at attributes[0])",
        ),
        ("queues:", "queue:\n  - {}\nqueues:", "queue: unknown section"),
        (
            'select: "billing >= 1"',
            "select: \"billing >= 1\", accept_phones: '(\\\\+1'",
            "queues[1].accept_phones: not a valid regular expression: missing ), "
            "unterminated subpattern",
        ),
        (
            '{id: bob, name: Bob, phone: "sip:2@pbx.example.test"}',
            '{id: bob, name: Bob, phone: "sip:2@pbx.example.test", phones: ["+1 555"]}',
            "experts[1].phones[0]: '+1 555' has characters that are not allowed",
        ),
        (
            "alice@example.test,",
            "alice@example.test, presence_source: nowhere,",
            "experts[0].presence_source: no such presence source (known: corp)",
        ),
    ],
)
def test_each_kind_of_mistake(old: str, new: str, expected: str) -> None:
    assert old in BASE
    found = problems_of(BASE.replace(old, new, 1))
    assert any(p.startswith(expected) for p in found), found


def test_two_experts_cannot_share_an_im_address() -> None:
    text = BASE.replace(
        '"sip:2@pbx.example.test"}', '"sip:2@pbx.example.test", im: Alice@example.test}'
    )
    assert problems_of(text) == ["experts[1].im: already used by experts[0] (Alice@example.test)"]


def test_a_declaration_error_is_reported_once_not_at_every_use() -> None:
    text = BASE.replace("{name: billing, type: proficiency}", "{name: billing, type: skill}")
    found = problems_of(text)
    assert found == [
        "attributes[0].type: got 'skill'; expected 'proficiency', 'boolean', 'list', 'number' or 'string'"
    ]


def test_message_templates_are_checked() -> None:
    text = BASE + 'messages:\n  en: {offer: "Offer {code} for {customer}"}\n  EN: {}\n'
    assert problems_of(text) == [
        "messages.en.offer: unknown placeholder {customer} (available: {caller}, {code}, {queue}, {timeout}, {waited})",
        "messages.EN: not a locale tag (such as en, es, pt-BR)",
    ]


def test_validation_does_not_stop_at_the_first_broken_object() -> None:
    # Objects that fail alone are left out of the cross checks; the others are still checked.
    text = BASE.replace("{id: bob, name: Bob,", "{id: bob, nme: Bob,").replace(
        "billing >= 1", "billing >= 1 && nope"
    )
    assert problems_of(text) == [
        "experts[1].name: required",
        "experts[1].nme: unknown key",
        "queues[1].select: column 17: undeclared reference to 'nope'",
    ]


@pytest.mark.parametrize("raw", [None, [], "text", 5])
def test_the_document_must_be_a_mapping(raw: object) -> None:
    doc, problems = validate_document(raw)
    assert doc is None and problems and problems[0].path == ""


def test_load_yaml_raises_invalid_input_with_every_problem() -> None:
    with pytest.raises(InvalidInput) as caught:
        load_yaml("experts: 5\nqueues: [{id: q}]\n")
    assert caught.value.message == "the configuration has 3 problems; nothing was applied"
    assert [str(p) for p in caught.value.details] == [
        "experts: must be a list",
        "queues[0].name: required",
        "queues[0].select: required",
    ]


def test_queue_defaults_follow_the_spec() -> None:
    q = Queue(id="q", name="Q", select="true")
    assert (q.order, q.offer_to, q.offer_timeout, q.max_wait, q.on_max_wait.kind) == (
        "longest_idle",
        1,
        20.0,
        300.0,
        "reject",
    )
    assert (q.wrap_up, q.decline_cooldown, q.max_no_answer, q.ring_timeout) == (0.0, 0.0, 0, 20.0)
    assert (q.service_level, q.priority, q.escalate, q.skill) == (20.0, 0, [], None)


def test_expert_attributes_default_by_type() -> None:
    doc = load_yaml(BASE)
    bob = doc.expert_map["bob"]
    assert doc.expert_attributes(bob) == {
        "billing": 0,
        "language": [],
        "certified": False,
        "seniority": 0.0,
        "site": "",
    }
    # Number attributes are normalized to floats (CEL doubles).
    assert doc.expert_attributes(doc.expert_map["alice"])["seniority"] == 3.0
    assert isinstance(doc.expert_map["alice"].attributes["seniority"], float)


def test_messages_fall_back_to_builtin_then_english() -> None:
    doc = load_yaml(BASE + 'messages:\n  es: {accepted: "Vale #{code}"}\n')
    assert doc.message("es", "accepted") == "Vale #{code}"
    assert doc.message("es-MX", "accepted") == "Vale #{code}"
    assert doc.message("es", "withdrawn").startswith("Retirada")
    assert doc.message("de", "withdrawn").startswith("Withdrawn")


@pytest.mark.parametrize(
    ("text", "seconds", "canonical"),
    [
        ("20s", 20, "20s"),
        ("5m", 300, "5m"),
        ("1h", 3600, "1h"),
        ("1h30m", 5400, "1h30m"),
        ("90s", 90, "1m30s"),
        ("500ms", 0.5, "500ms"),
        ("1.5s", 1.5, "1s500ms"),
        (0, 0, "0s"),
        (45, 45, "45s"),
        ("2h0m5s", 7205, "2h5s"),
    ],
)
def test_durations(text: object, seconds: float, canonical: str) -> None:
    assert parse_duration(text) == seconds
    assert format_duration(parse_duration(text)) == canonical
    assert parse_duration(canonical) == seconds


@pytest.mark.parametrize("text", ["20", "20 s", "1m1h", "5mm", "s", "", "-5s", True, [1]])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_cel_types_follow_the_attribute_types() -> None:
    doc = load_yaml(BASE)
    compiler = SelectionCompiler(doc.attributes)
    text = "billing >= 50 && 'es' in language && certified && seniority > 2.0 && site == ''"
    assert compiler.check(text) is None
    alice = doc.expert_attributes(doc.expert_map["alice"])
    bob = doc.expert_attributes(doc.expert_map["bob"])
    assert compiler.matches(text, alice) is True
    assert compiler.matches(text, bob) is False
    assert compiler.check("seniority > 2") == (
        "column 11: found no matching overload for '_>_' applied to '(double, int)'"
    )
    assert compiler.check("language") == "must be boolean, but is list<string>"
    assert (
        compiler.check("billing > 1 &&\n  nope")
        == "line 2, column 3: undeclared reference to 'nope'"
    )


def test_document_helpers() -> None:
    doc = ConfigDocument.model_validate(
        {
            "queues": [{"id": "q", "name": "Q", "select": "true"}],
            "entry_points": [{"dialed_number": "100", "queue": "q"}],
        }
    )
    assert doc.queue_map["q"].name == "Q"
    assert doc.entry_point_map["100"].queue == "q"
    assert doc.queue_map["q"].selections() == ["true"]


def test_a_broken_queue_still_has_its_selections_checked() -> None:
    # A bad duration in a queue must not hide a bad CEL selection in the same queue, and a
    # reference to that queue is not reported as missing.
    text = BASE.replace(
        'select: "billing >= 1"}', "select: \"billing >= 'high'\", offer_timeout: 20 seconds}"
    ).replace("queue: billing-es}", "queue: billing-any}")
    problems = problems_of(text)
    assert problems[0].startswith("queues[1].offer_timeout: bad duration '20 seconds'")
    assert problems[1:] == [
        "queues[1].select: column 9: found no matching overload for '_>=_' applied to '(int, string)'"
    ]


def test_every_kind_of_mistake_at_once_is_reported_in_one_pass() -> None:
    # Objects that fail their own validation still take part in the document checks: a row
    # error does not hide the duplicate of its id, its attribute values, its references, nor
    # (with an unknown key) the checks that relate its fields.
    text = (
        BASE.replace("{id: bob, name: Bob,", "{id: alice, name: Bob, colour: red,")
        .replace('test", im: alice', 'test", max_tasks: 0, im: alice')
        .replace("seniority: 3}", "seniority: 3, shoe_size: 42}")
        .replace(
            "on_max_wait: {overflow: billing-any}}",
            "on_max_wait: {overflow: billing-fr}, offer_timeout: soon, skill: shoe_size}",
        )
        .replace('select: "billing >= 1"}', 'select: "billing >= 1.5", colour: blue}')
        .replace("queue: billing-es}", "queue: billing-fr, sip_mode: pigeon}")
        .replace(
            "password_env: XMPP_PASSWORD}",
            "password_env: XMPP_PASSWORD, component: {jid: c.example.test, secret_env: S}, "
            "colour: green}",
        )
        .replace(
            "  - {name: site, type: string}",
            "  - {name: site, type: string}\n  - {name: site, type: text}",
        )
    )
    known_attributes = "(known: billing, language, certified, seniority, site)"
    known_queues = "(known: billing-es, billing-any)"
    assert problems_of(text) == [
        "attributes[5].type: got 'text'; expected 'proficiency', 'boolean', 'list', 'number' "
        "or 'string'",
        "attributes[5].name: duplicate 'site' (first at attributes[4])",
        "experts[0].max_tasks: Input should be greater than or equal to 1",
        "experts[0].attributes.shoe_size: unknown attribute",
        "experts[1].colour: unknown key",
        "experts[1].id: duplicate 'alice' (first at experts[0])",
        "queues[0].offer_timeout: bad duration 'soon': expected a duration such as 20s, 5m, 1h "
        "or 1h30m",
        f"queues[0].skill: no such attribute {known_attributes}",
        f"queues[0].on_max_wait.overflow: no such queue {known_queues}",
        "queues[1].colour: unknown key",
        "queues[1].select: column 9: found no matching overload for '_>=_' applied to "
        "'(int, double)'",
        "entry_points[0].sip_mode: got 'pigeon'; expected 'redirect' or 'proxy'",
        f"entry_points[0].queue: no such queue {known_queues}",
        "presence[0].colour: unknown key",
        "presence[0]: give either jid/password_env/host (account mode) or component",
    ]


def test_a_field_that_failed_is_not_reported_again_by_the_document_checks() -> None:
    text = BASE.replace(
        'select: "billing >= 1"}', 'select: "billing >= 1", order: most_skilled, skill: [x]}'
    ).replace("{id: bob, name: Bob,", "{id: 7, name: Bob,")
    assert problems_of(text) == [
        "experts[1].id: expected text, got the number 7 (quote it)",
        "queues[1].skill: expected text, got a list (quote it)",
    ]
