"""``expertline report ...`` prints the same rows as the API."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from reporting_scenario import EXPERTS, QUEUES_60M, write_all
from typer.testing import CliRunner

from expertline.cli import app
from expertline.db import migrate
from expertline.db.engine import make_engine
from expertline.reporting import migrate as reporting_migrate
from expertline.reporting.ingest import Ingester

HOUR = ["--from", "2026-11-25T10:00:00Z", "--to", "2026-11-25T11:00:00Z"]


def test_report_commands(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    reporting_migrate.upgrade(engine)
    write_all(engine)
    Ingester(engine, engine).run_until_idle()
    engine.dispose()
    runner = CliRunner()

    r = runner.invoke(
        app, ["--db", url, "report", "queues", *HOUR, "--interval", "60m", "--format", "json"]
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {"items": QUEUES_60M}

    r = runner.invoke(app, ["--db", url, "report", "experts", *HOUR, "--format", "csv"])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [(x["expert_id"], x["expert_name"], x["accepted"]) for x in rows] == [
        (e["expert_id"], e["expert_name"], str(e["accepted"])) for e in EXPERTS
    ]

    r = runner.invoke(app, ["--db", url, "report", "queues", *HOUR, "--interval", "60m"])
    assert r.exit_code == 0, r.output
    assert max(len(line) for line in r.stdout.splitlines()) <= 80, r.stdout
    assert "…" not in r.stdout  # no header or figure cut to fit
    assert "Billing Desk" in r.stdout and "off offered" in r.stdout

    r = runner.invoke(app, ["--db", url, "report", "tasks", *HOUR])
    assert r.exit_code == 0, r.output
    assert "9 row(s)" in r.stdout

    r = runner.invoke(app, ["--db", url, "report", "queues", "--from", "yesterday"])
    assert r.exit_code == 2
    assert "from: expected an ISO 8601" in r.stderr

    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    r = runner.invoke(app, ["--db", empty, "report", "queues"])
    assert r.exit_code == 2
    assert "expertline db upgrade" in r.stderr


def test_db_upgrade_migrates_a_separate_reporting_database(tmp_path: Path) -> None:
    runtime = f"sqlite:///{tmp_path / 'runtime.db'}"
    reporting = f"sqlite:///{tmp_path / 'reporting.db'}"
    r = CliRunner().invoke(
        app, ["--db", runtime, "db", "upgrade"], env={"EXPERTLINE_REPORTING_DB": reporting}
    )
    assert r.exit_code == 0, r.output
    assert "reporting schema upgraded from empty" in r.stdout
    engine = make_engine(reporting)
    try:
        reporting_migrate.require_current(engine)
    finally:
        engine.dispose()
    r = CliRunner().invoke(
        app, ["--db", runtime, "report", "queues"], env={"EXPERTLINE_REPORTING_DB": reporting}
    )
    assert r.exit_code == 0, r.output
    assert "0 row(s)" in r.stdout
