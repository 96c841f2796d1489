"""Configuration REST API through the real app, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from expertline.config import http as config_http
from expertline.security.tokens import create_token
from expertline.settings import Settings
from expertline.web import ops
from expertline.web.app import AppContext, create_app

DEMO = Path(__file__).parents[3] / "examples" / "demo.yaml"
JSON = {"content-type": "application/json"}


class Api:
    def __init__(self, client: TestClient, engine: Engine) -> None:
        self.client = client
        self.admin = {"Authorization": "Bearer " + create_token(engine, "ops", "admin")}
        self.reader = {"Authorization": "Bearer " + create_token(engine, "bi", "reporting")}
        self.router = {"Authorization": "Bearer " + create_token(engine, "cc", "routing-client")}


@pytest.fixture
def api(engine: Engine, tmp_path: Path) -> Iterator[Api]:
    ctx = AppContext(settings=Settings(data_dir=tmp_path, node="n1"), engine=engine)
    with TestClient(create_app(ctx, [ops.router, config_http.router])) as client:
        api = Api(client, engine)
        r = client.put(
            "/api/v1/config",
            content=DEMO.read_text(),
            headers={**api.admin, "content-type": "application/yaml"},
        )
        assert r.status_code == 200, r.text
        yield api


def test_crud_round_trip(api: Api) -> None:
    c = api.client
    zoe = {
        "id": "zoe",
        "name": "Zoe",
        "phone": "sip:1010@pbx.example.test",
        "attributes": {"billing": 60, "language": ["es"]},
    }
    r = c.post("/api/v1/experts", json=zoe, headers=api.admin)
    assert r.status_code == 201, r.text
    assert r.headers["location"] == "/api/v1/experts/zoe"
    assert r.headers["x-config-version"] == "2"
    r = c.get("/api/v1/experts/zoe", headers=api.reader)
    assert r.status_code == 200
    assert r.json()["attributes"] == {"billing": 60, "language": ["es"]}
    assert r.json()["max_tasks"] == 1  # defaults are shown on single objects
    r = c.put("/api/v1/experts/zoe", json={**zoe, "max_tasks": 3}, headers=api.admin)
    assert r.status_code == 200 and r.json()["max_tasks"] == 3
    listing = c.get("/api/v1/experts?limit=2&offset=6", headers=api.reader).json()
    assert listing["total"] == 7 and [e["id"] for e in listing["items"]] == ["zoe"]
    assert listing["version"] == 3
    r = c.delete("/api/v1/experts/zoe", headers=api.admin)
    assert r.status_code == 204 and r.headers["x-config-version"] == "4"
    assert c.get("/api/v1/experts/zoe", headers=api.reader).status_code == 404


@pytest.mark.parametrize(
    ("segment", "body", "key"),
    [
        ("attributes", {"name": "region", "type": "list", "values": ["eu", "us"]}, "region"),
        (
            "queues",
            {"id": "q2", "name": "Q2", "select": "networking > 10", "offer_timeout": "45s"},
            "q2",
        ),
        (
            "entry-points",
            {"dialed_number": "+18005550199", "queue": "billing-any", "sip_mode": "proxy"},
            "+18005550199",
        ),
        (
            "presence-sources",
            {
                "id": "comp",
                "kind": "xmpp",
                "component": {
                    "jid": "experts.example.test",
                    "secret_env": "XMPP_SECRET",
                    "host": "127.0.0.1",
                    "port": 5347,
                },
            },
            "comp",
        ),
        ("message-sets", {"locale": "fr", "accepted": "Accepté #{code}"}, "fr"),
    ],
)
def test_each_kind_has_crud(api: Api, segment: str, body: dict, key: str) -> None:
    c = api.client
    assert c.post(f"/api/v1/{segment}", json=body, headers=api.admin).status_code == 201
    assert c.post(f"/api/v1/{segment}", json=body, headers=api.admin).status_code == 409
    got = c.get(f"/api/v1/{segment}/{key}", headers=api.reader)
    assert got.status_code == 200
    assert {k: got.json()[k] for k in body} == body
    assert key in str(c.get(f"/api/v1/{segment}", headers=api.reader).json()["items"])
    assert c.put(f"/api/v1/{segment}/{key}", json=body, headers=api.admin).status_code == 200
    assert c.delete(f"/api/v1/{segment}/{key}", headers=api.admin).status_code == 204
    assert c.delete(f"/api/v1/{segment}/{key}", headers=api.admin).status_code == 404


def test_auth(api: Api) -> None:
    c = api.client
    assert c.get("/api/v1/experts").status_code == 401
    assert c.get("/api/v1/experts", headers={"Authorization": "Bearer elt_nope"}).status_code == 401
    assert c.get("/api/v1/experts", headers=api.router).status_code == 403
    assert c.get("/api/v1/config/history", headers=api.reader).status_code == 200
    r = c.post("/api/v1/experts", json={"id": "x", "name": "X", "phone": "1"}, headers=api.reader)
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "forbidden"
    assert c.delete("/api/v1/queues/billing-es", headers=api.reader).status_code == 403
    assert c.put("/api/v1/config", json={}, headers=api.reader).status_code == 403


def test_invalid_input_is_422_with_paths_and_changes_nothing(api: Api) -> None:
    c = api.client
    r = c.post(
        "/api/v1/experts",
        json={"id": "x", "name": "X", "phone": "1", "password": "p"},
        headers=api.admin,
    )
    assert r.status_code == 422
    assert r.json()["error"]["details"] == [{"path": "password", "message": "unknown key"}]
    r = c.post("/api/v1/queues", content=b"{oops", headers={**api.admin, **JSON})
    assert r.status_code == 422
    assert r.json()["error"]["message"] == (
        "body is not valid JSON: unexpected character, expected a string key at line 1 column 2"
    )
    r = c.post(
        "/api/v1/queues", json={"id": "q", "select": "true", "offer_to": 0}, headers=api.admin
    )
    assert r.json()["error"]["details"] == [
        {"path": "name", "message": "required"},
        {
            "path": "offer_to",
            "message": "expected a number of experts from 1 to 1000, or all; got 0",
        },
    ]
    r = c.post(
        "/api/v1/experts",
        json={"id": "x", "name": "X", "phone": "1", "attributes": {"billing": 0}},
        headers=api.admin,
    )
    assert r.status_code == 422
    assert r.json()["error"]["details"] == [
        {"path": "experts[6].attributes.billing", "message": "proficiency 0 is out of range 1..100"}
    ]
    r = c.delete("/api/v1/queues/network-escalations", headers=api.admin)
    assert r.status_code == 422
    assert [d["path"] for d in r.json()["error"]["details"]] == [
        "entry_points[2].queue",
        "entry_points[3].queue",
    ]
    r = c.put(
        "/api/v1/queues/billing-es",
        json={"id": "other", "name": "B", "select": "true"},
        headers=api.admin,
    )
    assert r.status_code == 422
    r = c.get("/api/v1/config/history", headers=api.reader).json()
    assert [v["version"] for v in r["items"]] == [1]


def test_whole_document(api: Api) -> None:
    c = api.client
    r = c.get("/api/v1/config", headers=api.reader)
    assert r.status_code == 200 and r.headers["x-config-version"] == "1"
    doc = r.json()
    assert doc["queues"][0]["on_max_wait"] == {"overflow": "billing-any"}
    assert "order" not in doc["queues"][1]  # canonical: defaults omitted
    same = c.put("/api/v1/config", json=doc, headers=api.admin)
    assert same.status_code == 200 and same.json()["unchanged"] is True
    doc["queues"][1]["name"] = "Billing (all)"
    doc["experts"].append({"id": "bad", "name": "B", "phone": "1", "attributes": {"nope": 1}})
    doc["entry_points"][0]["queue"] = "missing"
    r = c.put("/api/v1/config", json=doc, headers=api.admin)
    assert r.status_code == 422
    assert [d["path"] for d in r.json()["error"]["details"]] == [
        "experts[6].attributes.nope",
        "entry_points[0].queue",
    ]
    doc["experts"].pop()
    doc["entry_points"][0]["queue"] = "billing-es"
    r = c.put("/api/v1/config", json=doc, headers=api.admin)
    assert r.json() == {"version": 2, "added": 0, "changed": 1, "removed": 0, "unchanged": False}
    r = c.put("/api/v1/config", content=b"{not json", headers={**api.admin, **JSON})
    assert r.status_code == 422
    r = c.put(
        "/api/v1/config",
        content=DEMO.read_text().replace("billing: 80", "billing: 0"),
        headers={**api.admin, "content-type": "application/yaml"},
    )
    assert r.json()["error"]["details"] == [
        {
            "path": "experts[0].attributes.billing",
            "message": "proficiency 0 is out of range 1..100 (line 22)",
        }
    ]


def test_history_names_the_token(api: Api) -> None:
    c = api.client
    c.post("/api/v1/attributes", json={"name": "vip", "type": "boolean"}, headers=api.admin)
    r = c.get("/api/v1/config/history", headers=api.reader).json()
    assert r["items"][0]["actor"] == "token:ops"
    assert r["items"][0]["source"] == "api:attributes"
    assert r["items"][0]["summary"] == "added attribute vip"
    detail = c.get("/api/v1/config/history/2", headers=api.reader).json()
    assert detail["changes"] == [
        {
            "kind": "attribute",
            "object_id": "vip",
            "op": "add",
            "before": None,
            "after": {"name": "vip", "type": "boolean"},
        }
    ]
    paged = c.get("/api/v1/config/history?limit=1", headers=api.reader).json()
    assert paged["next"] == 2
    older = c.get("/api/v1/config/history?limit=1&before=2", headers=api.reader).json()
    assert [v["version"] for v in older["items"]] == [1] and older["next"] is None


def test_status_shows_the_config_version_and_openapi_has_the_models(api: Api) -> None:
    c = api.client
    assert c.get("/api/v1/status", headers=api.reader).json()["config_version"] == 1
    c.post("/api/v1/attributes", json={"name": "vip", "type": "boolean"}, headers=api.admin)
    assert c.get("/api/v1/status", headers=api.reader).json()["config_version"] == 2
    spec = c.get("/openapi.json").json()
    body = spec["paths"]["/api/v1/experts"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/Expert"}
    schemas = spec["components"]["schemas"]
    assert {
        "Expert",
        "Queue",
        "Attribute",
        "EntryPoint",
        "PresenceSource",
        "ConfigDocument",
    } <= set(schemas)
    text = str(schemas)
    assert "password'" not in text and "secret'" not in text  # secrets only by env var name


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/config/history/9223372036854775808",
        "/api/v1/config/history/99999999999999999999",
        "/api/v1/config/history/2147483648",
        "/api/v1/config/history?before=9223372036854775808",
        "/api/v1/config/history?before=2147483648",
        "/api/v1/config/history/0",
    ],
)
def test_a_version_beyond_the_column_is_422(api: Api, url: str) -> None:
    r = api.client.get(url, headers=api.reader)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid"


def test_a_deeply_nested_document_is_422_and_changes_nothing(api: Api) -> None:
    c = api.client
    deep = "[" * 1000 + "]" * 1000
    body = '{"experts": [{"id": "z", "name": "Z", "phone": "1", "attributes": {"x": ' + deep
    r = c.put("/api/v1/config", content=body + "}}]}", headers={**api.admin, **JSON})
    assert r.status_code == 422, r.text
    assert "nested more than 64 levels deep" in r.json()["error"]["message"]
    shallow = "[" * 100 + "]" * 100  # passes a JSON parser; the document is still too deep
    r = c.put(
        "/api/v1/config",
        content=body.replace(deep, shallow) + "}}]}",
        headers={**api.admin, **JSON},
    )
    assert r.status_code == 422, r.text
    r = c.put(
        "/api/v1/config",
        content="experts:\n  - {id: z, name: Z, phone: '1', attributes: {x: " + deep + "}}\n",
        headers={**api.admin, "content-type": "application/yaml"},
    )
    assert r.status_code == 422, r.text
    r = c.post(
        "/api/v1/experts",
        content=body.removeprefix('{"experts": [').replace(deep, shallow) + "}}",
        headers={**api.admin, **JSON},
    )
    assert r.status_code == 422, r.text
    assert [
        v["version"] for v in c.get("/api/v1/config/history", headers=api.reader).json()["items"]
    ] == [1]


def test_strict_types_and_finite_numbers_over_rest(api: Api) -> None:
    c = api.client
    for body, path, words in [
        (
            {"id": "q9", "name": "Q", "select": "true", "priority": True},
            "priority",
            "got a boolean",
        ),
        ({"id": "q9", "name": "Q", "select": "true", "priority": "5"}, "priority", "got '5'"),
        ({"id": "q9", "name": "Q", "select": "true", "max_no_answer": 2.0}, "max_no_answer", ""),
    ]:
        r = c.post("/api/v1/queues", json=body, headers=api.admin)
        assert r.status_code == 422, r.text
        [detail] = r.json()["error"]["details"]
        assert detail["path"] == path and words in detail["message"], detail
    r = c.post(
        "/api/v1/experts",
        json={"id": "x" * 500_000, "name": "X", "phone": "1", "may_decline": "false"},
        headers=api.admin,
    )
    assert r.status_code == 422
    assert len(r.content) < 1000  # the long id is not echoed back
    assert {d["path"] for d in r.json()["error"]["details"]} == {"id", "may_decline"}


def test_a_body_with_a_bad_key_is_also_checked_against_the_configuration(api: Api) -> None:
    # An unknown key does not hide what the object would leave wrong in the configuration:
    # both show in one answer, the body's problems by body path, the rest by document path.
    c = api.client
    r = c.post(
        "/api/v1/queues",
        json={"id": "q9", "name": "Q", "select": "billing >= 'high'", "colour": "red"},
        headers=api.admin,
    )
    assert r.status_code == 422, r.text
    assert [(d["path"], d["message"]) for d in r.json()["error"]["details"]] == [
        ("colour", "unknown key"),
        (
            "queues[3].select",
            "column 9: found no matching overload for '_>=_' applied to '(int, string)'",
        ),
    ]
    r = c.put(
        "/api/v1/experts/bruno",
        json={
            "id": "bruno",
            "name": "Bruno",
            "phone": "sip:1002@pbx.example.test",
            "max_tasks": 0,
            "attributes": {"billing": 500},
        },
        headers=api.admin,
    )
    assert r.status_code == 422, r.text
    assert [d["path"] for d in r.json()["error"]["details"]] == [
        "max_tasks",
        "experts[1].attributes.billing",
    ]
    history = c.get("/api/v1/config/history", headers=api.reader).json()["items"]
    assert [v["version"] for v in history] == [1]


def test_an_object_whose_own_type_is_bad_is_checked_without_a_server_error(api: Api) -> None:
    # Found by fuzzing: an attribute with an unknown type is salvaged with no type and
    # checked against the document; the CEL compiler then declared it with no type (500).
    r = api.client.post(
        "/api/v1/attributes",
        json={"description": None, "name": "A", "type": "AAA", "values": []},
        headers=api.admin,
    )
    assert r.status_code == 422, r.text
    assert "type" in {d["path"] for d in r.json()["error"]["details"]}
    history = api.client.get("/api/v1/config/history", headers=api.reader).json()["items"]
    assert [v["version"] for v in history] == [1]
