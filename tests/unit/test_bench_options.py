"""Benchmark section selection: ``--only`` narrows a run and refuses unknown names."""

import pytest

from expertline.bench.common import BenchOptions


def test_every_section_runs_without_only() -> None:
    options = BenchOptions()
    options.check_sections(["core", "http"])
    assert options.selected("core") and options.selected("http")


def test_only_selects_the_named_sections() -> None:
    options = BenchOptions(only=frozenset({"http"}))
    options.check_sections(["core", "http"])
    assert options.selected("http")
    assert not options.selected("core")


def test_unknown_section_is_refused_with_the_known_ones() -> None:
    options = BenchOptions(only=frozenset({"htp"}))
    with pytest.raises(ValueError, match=r"unknown section htp; sections: core, http"):
        options.check_sections(["core", "http"])
