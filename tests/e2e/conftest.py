"""End-to-end tests: real ``expertline serve`` processes driven by headless Chromium.

Screenshots of every page are written as artefacts under a pytest temporary directory (its
path is printed); ``EXPERTLINE_ARTEFACTS`` names another directory to keep them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from support.chromium import chromium_browser


@pytest.fixture(scope="session")
def artefacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = os.environ.get("EXPERTLINE_ARTEFACTS")
    path = Path(where) if where else tmp_path_factory.mktemp("artefacts")
    path.mkdir(parents=True, exist_ok=True)
    print(f"\nbrowser screenshots: {path}")
    return path


@pytest.fixture(scope="module")  # one Playwright at a time: other modules start their own
def chromium() -> Iterator[Any]:
    with chromium_browser() as browser:
        yield browser


@pytest.fixture
def new_page(chromium: Any) -> Iterator[Callable[..., Any]]:
    """Pages in contexts of their own (each its own cookies), closed after the test."""
    contexts: list[Any] = []

    def make(width: int = 1280, height: int = 900) -> Any:
        context = chromium.new_context(viewport={"width": width, "height": height})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15_000)
        return page

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def shot(artefacts: Path, request: pytest.FixtureRequest) -> Callable[[Any, str], Path]:
    def take(page: Any, name: str, full_page: bool = True) -> Path:
        path = artefacts / f"{request.node.name}-{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        print(f"screenshot: {path}")
        return path

    return take
