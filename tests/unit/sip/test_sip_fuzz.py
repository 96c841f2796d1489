"""Run the atheris fuzzer on the SIP parser for a bounded time (skipped without atheris)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HARNESS = Path(__file__).with_name("fuzz_sip_message.py")


@pytest.mark.slow
def test_parser_survives_coverage_guided_fuzzing(tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    sys.path.insert(0, str(HARNESS.parent))
    try:
        from fuzz_sip_message import SEED
    finally:
        sys.path.remove(str(HARNESS.parent))
    (corpus / "invite").write_bytes(SEED)
    result = subprocess.run(
        [
            sys.executable,
            str(HARNESS),
            "-runs=20000",
            "-max_total_time=10",
            "-max_len=2048",
            f"-artifact_prefix={tmp_path}/",
            str(corpus),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Done" in result.stderr
