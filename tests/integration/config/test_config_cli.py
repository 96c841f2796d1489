"""``expertline config ...`` against a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine
from typer.testing import CliRunner

from expertline.cli import app
from expertline.config import store
from support.processes import cli

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


def test_a_row_with_an_error_still_has_its_id_and_values_checked(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    # One pass: bruno's row has an error of its own (max_tasks), which does not hide that
    # his id repeats alice's nor that his billing is out of range.
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        DEMO.read_text()
        .replace("  - id: bruno\n", "  - id: alice\n    max_tasks: 0\n")
        .replace("billing: 55,", "billing: 555,")
    )
    result = run(db_url, "import", str(bad))
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [
        f"error: {bad}: 3 problems; nothing was applied",
        "  experts[1].max_tasks: Input should be greater than or equal to 1 (line 26)",
        "  experts[1].id: duplicate 'alice' (first at experts[0]) (line 25)",
        "  experts[1].attributes.billing: proficiency 555 is out of range 1..100 (line 30)",
    ]
    assert store.current_version(engine) == 0


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


def _hostile_files(tmp_path: Path) -> dict[str, tuple[Path, list[str]]]:
    """name -> (file, the problem lines ``config validate`` must print)."""
    expert = "experts:\n  - {id: a, name: A, phone: '1', attributes: {x: %s}}\n"
    files = {
        "deep-flow": (
            expert % ("[" * 1000 + "]" * 1000),
            ["not valid YAML: line 2, column 1046: exceeded maximum nesting depth"],
        ),
        "deep-block": (
            "experts:\n  - id: a\n    name: A\n    phone: '1'\n    attributes:\n      x:\n"
            + "        "
            + "- " * 1000
            + "[]\n",
            ["experts[0].attributes.x…: nested more than 64 levels deep (line 7)"],
        ),
        "deep-json": (
            '{"experts": [{"id": "a", "name": "A", "phone": "1", "attributes": {"x": '
            + "[" * 500
            + "]" * 500
            + "}}]}\n",
            ["experts[0].attributes.x…: nested more than 64 levels deep"],
        ),
        "huge-id": (
            "experts:\n  - id: " + "x" * 10_000_000 + "\n    name: A\n    phone: '1'\n",
            ["experts[0].id: 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'…(10,000,000 chars)"],
        ),
        "non-finite": (
            "attributes:\n  - {name: n, type: number}\n"
            "experts:\n  - {id: a, name: A, phone: '1', attributes: {n: .inf}}\n"
            "  - {id: b, name: B, phone: '1', attributes: {n: -.inf}}\n"
            "  - {id: c, name: C, phone: '1', attributes: {n: .nan}}\n",
            [
                "experts[0].attributes.n: expected a number, got .inf (not a finite number)",
                "experts[1].attributes.n: expected a number, got -.inf (not a finite number)",
                "experts[2].attributes.n: expected a number, got .nan (not a finite number)",
            ],
        ),
        "loose-types": (
            "experts:\n  - {id: a, name: A, phone: '1', max_tasks: '2', may_decline: 1}\n"
            "queues:\n  - {id: q, name: Q, select: 'true', priority: true}\n"
            "  - {id: r, name: R, select: 'true', priority: '5', offer_timeout: .inf}\n",
            [
                "experts[0].max_tasks: expected a whole number, got '2'",
                "experts[0].may_decline: expected true or false, got the number 1",
                "queues[0].priority: expected a whole number, got a boolean",
                "queues[1].offer_timeout: expected a duration such as 20s",
                "queues[1].priority: expected a whole number, got '5'",
            ],
        ),
    }
    out = {}
    for name, (text, lines) in files.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        out[name] = (path, lines)
    return out


def test_hostile_files_get_one_line_per_problem_and_change_nothing(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    """Real processes: no traceback, no 10 MB echo, nothing applied, exit 2."""
    for name, (path, lines) in _hostile_files(tmp_path).items():
        for command in (
            ["config", "validate", str(path)],
            ["--db", db_url, "config", "import", str(path)],
        ):
            result = cli(*command)
            assert result.returncode == 2, (name, result.stderr[-2000:])
            assert "Traceback" not in result.stderr, (name, result.stderr[-2000:])
            assert len(result.stderr) < 2000, name
            printed = result.stderr.splitlines()
            assert printed[0] == (
                f"error: {path}: {len(lines)} problem{'s' if len(lines) != 1 else ''}; "
                "nothing was applied"
            ), (name, printed)
            assert len(printed) == 1 + len(lines), (name, printed)
            for line, expected in zip(printed[1:], lines, strict=True):
                assert line.strip().startswith(expected), (name, line, expected)
    assert store.history(engine) == []
