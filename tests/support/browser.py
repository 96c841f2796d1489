"""Helpers for the browser tests (``tests/e2e``): signing in through the pages."""

from __future__ import annotations

from typing import Any

PASSWORD = "a long enough password"


def sign_in(page: Any, base_url: str, target: str, username: str, password: str = PASSWORD) -> None:
    page.goto(base_url + target)
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("#sign-in-password")
    page.wait_for_load_state()


def sign_in_with_token(page: Any, base_url: str, target: str, token: str) -> None:
    page.goto(base_url + target)
    page.fill("#token", token)
    page.click("#sign-in-token")
    page.wait_for_load_state()
