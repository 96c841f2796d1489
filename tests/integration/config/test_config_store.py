"""The configuration store on SQLite and PostgreSQL: atomic apply, versions, history, edits."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from expertline.config import documents, store
from expertline.config.export import export_yaml
from expertline.config.schema import Expert, Queue
from expertline.config.validate import load_yaml
from expertline.db.tables import config_changes, config_objects, config_versions
from expertline.errors import Conflict, InvalidInput, NotFound

DEMO = Path(__file__).parents[3] / "examples" / "demo.yaml"


def counts(engine: Engine) -> tuple[int, int, int]:
    with engine.connect() as conn:
        return (
            conn.execute(select(func.count()).select_from(config_objects)).scalar_one(),
            conn.execute(select(func.count()).select_from(config_versions)).scalar_one(),
            conn.execute(select(func.count()).select_from(config_changes)).scalar_one(),
        )


def test_apply_export_import_export_is_byte_identical(engine: Engine) -> None:
    assert store.current_version(engine) == 0
    result = store.apply_document(engine, load_yaml(DEMO.read_text()), "cli:tester")
    assert (result.version, result.changed, result.removed) == (1, 0, 0)
    documents._caches.clear()  # read back from the database, not the cache
    _, doc = store.load_document(engine)
    first = export_yaml(doc)
    again = store.apply_document(engine, load_yaml(first), "cli:tester")
    assert again.unchanged and again.version == 1
    documents._caches.clear()
    assert export_yaml(store.load_document(engine)[1]) == first
    assert counts(engine)[1] == 1


def test_changes_are_diffed_and_recorded_with_the_actor(engine: Engine) -> None:
    store.apply_document(engine, load_yaml(DEMO.read_text()), "cli:alice")
    text = DEMO.read_text()
    edited = text.replace("name: Alice Ng", "name: Alice Ng-Smith").replace(
        "  - id: farid\n", "  - id: farida\n"
    )
    result = store.apply_document(engine, load_yaml(edited), "token:ops", source="api:config")
    assert (result.version, result.added, result.changed, result.removed) == (2, 1, 1, 1)
    newest = store.history(engine, limit=1)[0]
    assert (newest.version, newest.actor, newest.source) == (2, "token:ops", "api:config")
    assert (newest.added, newest.changed, newest.removed) == (1, 1, 1)
    assert "changed expert alice" in newest.summary
    detail = {(c.object_id, c.op): c for c in store.changes(engine, 2)}
    assert set(detail) == {("alice", "change"), ("farida", "add"), ("farid", "remove")}
    assert detail[("alice", "change")].before["name"] == "Alice Ng"
    assert detail[("alice", "change")].after["name"] == "Alice Ng-Smith"
    assert detail[("farid", "remove")].after is None
    assert [v.version for v in store.history(engine, limit=5, before=2)] == [1]
    assert store.history(engine)[1].actor == "cli:alice"
    with pytest.raises(NotFound):
        store.changes(engine, 99)


def test_reordering_keeps_the_version_but_the_export_follows(engine: Engine) -> None:
    doc = load_yaml(DEMO.read_text())
    store.apply_document(engine, doc, "cli:t")
    reordered = doc.model_copy(update={"experts": list(reversed(doc.experts))})
    assert store.apply_document(engine, reordered, "cli:t").unchanged
    documents._caches.clear()
    assert store.load_document(engine)[1].experts[0].id == doc.experts[-1].id


def test_delete_of_a_referenced_queue_fails_with_the_reference_path(engine: Engine) -> None:
    store.apply_document(engine, load_yaml(DEMO.read_text()), "cli:t")
    before = counts(engine)
    with pytest.raises(InvalidInput) as caught:
        store.delete_object(engine, "queues", "billing-any", "token:ops")
    paths = [p.path for p in caught.value.details]
    assert paths == ["queues[0].on_max_wait.overflow", "entry_points[1].queue"]
    assert counts(engine) == before


def test_object_edits(engine: Engine) -> None:
    store.apply_document(engine, load_yaml(DEMO.read_text()), "cli:t")
    zoe = Expert(id="zoe", name="Zoe", phone="sip:1@x.example.test", attributes={"billing": 70})
    assert store.create_object(engine, "experts", zoe, "token:ops").version == 2
    with pytest.raises(Conflict):
        store.create_object(engine, "experts", zoe, "token:ops")
    renamed = zoe.model_copy(update={"name": "Zoé"})
    assert store.replace_object(engine, "experts", "zoe", renamed, "token:ops").version == 3
    assert store.get_object(engine, "experts", "zoe").name == "Zoé"
    with pytest.raises(InvalidInput):
        store.replace_object(engine, "experts", "alice", renamed, "token:ops")
    with pytest.raises(NotFound):
        store.replace_object(
            engine, "experts", "nobody", Expert(id="nobody", name="N", phone="1"), "t"
        )
    bad = Queue(id="q9", name="Q9", select="billing > 'x'")
    with pytest.raises(InvalidInput) as caught:
        store.create_object(engine, "queues", bad, "token:ops")
    assert caught.value.details[0].path == "queues[3].select"
    assert store.delete_object(engine, "experts", "zoe", "token:ops").version == 4
    with pytest.raises(NotFound):
        store.get_object(engine, "experts", "zoe")
    assert store.current_version(engine) == 4
    assert [v.actor for v in store.history(engine)][:3] == ["token:ops"] * 3


def test_a_stale_writer_gets_a_conflict_and_nothing_changes(engine: Engine) -> None:
    doc = load_yaml(DEMO.read_text())
    store.apply_document(engine, doc, "cli:t")
    store.create_object(engine, "experts", Expert(id="x1", name="X", phone="1"), "t")
    with pytest.raises(Conflict):
        store.apply_document(engine, doc, "cli:t", expect_version=1)
    assert store.current_version(engine) == 2


def test_concurrent_edits_all_land_as_distinct_versions(engine: Engine) -> None:
    store.apply_document(engine, load_yaml(DEMO.read_text()), "cli:t")
    errors: list[BaseException] = []

    def add(i: int) -> None:
        try:
            store.create_object(
                engine, "experts", Expert(id=f"c{i}", name=f"C{i}", phone=str(i)), f"token:w{i}"
            )
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert store.current_version(engine) == 5
    documents._caches.clear()
    ids = {e.id for e in store.load_document(engine)[1].experts}
    assert {"c0", "c1", "c2", "c3"} <= ids


def test_message_sets_are_objects_keyed_by_locale(engine: Engine) -> None:
    store.apply_document(engine, load_yaml(DEMO.read_text()), "cli:t")
    from expertline.config.schema import MessageSet

    store.create_object(engine, "messages", MessageSet(accepted="OK #{code}"), "t", locale="fr")
    documents._caches.clear()
    _, doc = store.load_document(engine)
    assert doc.message("fr", "accepted") == "OK #{code}"
    assert list(doc.messages) == ["en", "es", "fr"]
    store.delete_object(engine, "messages", "es", "t")
    documents._caches.clear()
    assert list(store.load_document(engine)[1].messages) == ["en", "fr"]


def test_import_file_and_bulk_apply(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    experts = "\n".join(
        f"  - {{id: e{i}, name: E{i}, phone: 'sip:{i}@pbx.example.test', attributes: {{billing: {i % 100 + 1}}}}}"
        for i in range(3000)
    )
    path.write_text(
        "attributes: [{name: billing, type: proficiency}]\nexperts:\n" + experts + "\n"
        "queues: [{id: q, name: Q, select: 'billing > 50'}]\n"
    )
    result = store.import_file(engine, path, actor="cli:t")
    assert result.added == 3002
    assert counts(engine) == (3002, 1, 3002)
    path.write_text(path.read_text().replace("billing > 50", "billing > 60"))
    assert store.import_file(engine, path, actor="cli:t").changed == 1


def test_a_failure_midway_rolls_the_whole_apply_back(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.apply_document(engine, load_yaml(DEMO.read_text()), "cli:t")
    before = counts(engine)
    real = documents.bulk_insert

    def failing(conn, table, *args):  # type: ignore[no-untyped-def]
        real(conn, table, *args)
        if table == "config_changes":
            raise RuntimeError("disk full")

    monkeypatch.setattr(documents, "bulk_insert", failing)
    edited = DEMO.read_text().replace("  - id: farid\n", "  - id: farida\n")
    with pytest.raises(RuntimeError):
        store.apply_document(engine, load_yaml(edited), "cli:t")
    assert counts(engine) == before
    assert store.current_version(engine) == 1
    documents._caches.clear()
    assert "farid" in store.load_document(engine)[1].expert_map


@pytest.mark.postgres
def test_a_read_only_database_refuses_with_a_clear_error(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("read-only transactions are a PostgreSQL standby's behaviour")
    from sqlalchemy import text

    from expertline.db.engine import make_engine

    url = engine.url.render_as_string(hide_password=False)
    with engine.begin() as conn:
        conn.execute(
            text(f'ALTER DATABASE "{engine.url.database}" SET default_transaction_read_only = on')
        )
    standby = make_engine(url)
    try:
        with pytest.raises(store.ReadOnly) as caught:
            store.apply_document(standby, load_yaml(DEMO.read_text()), "cli:t")
        assert caught.value.http_status == 503
        assert "read-only" in caught.value.message
    finally:
        standby.dispose()
        with engine.begin() as conn:
            conn.execute(text("SET default_transaction_read_only = off"))
            conn.execute(
                text(f'ALTER DATABASE "{engine.url.database}" RESET default_transaction_read_only')
            )


def test_single_object_edits_match_what_a_reader_loads_afterwards(engine: Engine) -> None:
    store.apply_document(engine, load_yaml(DEMO.read_text()), "cli:t")
    store.delete_object(engine, "experts", "chloe", "t")
    store.create_object(engine, "experts", Expert(id="zed", name="Zed", phone="9"), "t")
    store.create_object(engine, "experts", Expert(id="amy", name="Amy", phone="8"), "t")
    alice = store.get_object(engine, "experts", "alice")
    same = store.replace_object(engine, "experts", "alice", alice, "t")
    assert same.unchanged and same.version == 4  # identical body: no new version
    _, cached = store.load_document(engine)
    documents._caches.clear()
    version, cold = store.load_document(engine)
    assert version == 4
    assert export_yaml(cold) == export_yaml(cached)
    assert [e.id for e in cold.experts][-2:] == ["zed", "amy"]
    # A full import of that same document changes nothing (positions are renumbered quietly).
    assert store.apply_document(engine, load_yaml(export_yaml(cold)), "cli:t").unchanged
    documents._caches.clear()
    assert export_yaml(store.load_document(engine)[1]) == export_yaml(cold)


def test_an_expert_edit_is_checked_against_the_rest(engine: Engine) -> None:
    store.apply_document(engine, load_yaml(DEMO.read_text()), "cli:t")
    clash = Expert(
        id="al2",
        name="Al",
        phone="7",
        im="ALICE@example.test",
        attributes={"language": ["de"], "seniority": 2},
        presence_source="nope",
    )
    with pytest.raises(InvalidInput) as caught:
        store.create_object(engine, "experts", clash, "t")
    assert [str(p) for p in caught.value.details] == [
        "experts[6].attributes.language: 'de' is not one of [en, es, fr]",
        "experts[6].presence_source: no such presence source (known: corp-xmpp)",
        "experts[6].im: already used by experts[0] (alice@example.test)",
    ]
    ok = Expert(id="al2", name="Al", phone="7", attributes={"seniority": 2})
    store.create_object(engine, "experts", ok, "t")
    stored = store.changes(engine, 2)[0].after
    assert stored == {"id": "al2", "name": "Al", "phone": "7", "attributes": {"seniority": 2.0}}
