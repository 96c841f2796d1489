"""``expertline config ...`` against a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine
from typer.testing import CliRunner

from expertline.cli import app
from expertline.config import store

DEMO = Path(__file__).parents[3] / "examples" / "demo.yaml"


def run(db_url: str, *args: str, input: str | None = None):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, ["--db", db_url, "config", *args], input=input)


def test_import_export_round_trip(engine: Engine, db_url: str, tmp_path: Path) -> None:
    result = run(db_url, "import", str(DEMO))
    assert result.exit_code == 0, result.output
    assert "applied version 1: added 22, changed 0, removed 0" in result.stdout
    exported = tmp_path / "out" / "export.yaml"
    result = run(db_url, "export", "--out", str(exported))
    assert result.exit_code == 0, result.output
    first = exported.read_text()
    result = run(db_url, "import", str(exported))
    assert "no changes; the configuration stays at version 1" in result.stdout
    result = run(db_url, "export")
    assert result.exit_code == 0
    assert result.stdout == first
    history = store.history(engine)
    assert [h.actor.startswith("cli:") for h in history] == [True]
    assert history[0].source == "import"


def test_bad_file_lists_every_problem_and_applies_nothing(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    assert run(db_url, "import", str(DEMO)).exit_code == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        DEMO.read_text()
        .replace("billing: 80", "billing: 800")
        .replace('select: "billing >= 30"', "select: \"billing >= 'x'\"")
        .replace("queue: billing-any", "queue: billing-all")
    )
    for command in (["import"], ["import", "--dry-run"], ["validate"]):
        result = run(db_url, *command, str(bad))
        assert result.exit_code == 2, result.output
        lines = result.stderr.splitlines()
        assert lines[0] == f"error: {bad}: 3 problems; nothing was applied"
        assert lines[1:] == [
            "  experts[0].attributes.billing: proficiency 800 is out of range 1..100 (line 22)",
            "  queues[1].select: column 9: found no matching overload for '_>=_' applied to '(int, string)' (line 73)",
            "  entry_points[1].queue: no such queue (known: billing-es, billing-any, network-escalations) (line 95)",
        ]
    assert store.current_version(engine) == 1


def test_dry_run_writes_nothing(engine: Engine, db_url: str) -> None:
    result = run(db_url, "import", "--dry-run", str(DEMO))
    assert result.exit_code == 0, result.output
    assert "would add 22, change 0, remove 0" in result.stdout
    assert store.current_version(engine) == 0


def test_validate_needs_no_database_and_reads_stdin(tmp_path: Path) -> None:
    missing = f"sqlite:///{tmp_path / 'never' / 'created.db'}"
    result = run(missing, "validate", "-", input=DEMO.read_text())
    assert result.exit_code == 0, result.output
    assert "valid (6 attributes, 6 experts, 3 queues" in result.stdout
    assert not (tmp_path / "never").exists()


def test_unreadable_file_is_one_clear_line(engine: Engine, db_url: str, tmp_path: Path) -> None:
    result = run(db_url, "import", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 2
    assert result.stderr.strip().startswith("error: cannot read")
    assert len(result.stderr.strip().splitlines()) == 1


def test_history_command(engine: Engine, db_url: str) -> None:
    run(db_url, "import", str(DEMO))
    result = run(db_url, "history")
    assert result.exit_code == 0
    assert "import" in result.stdout and "cli:" in result.stdout
