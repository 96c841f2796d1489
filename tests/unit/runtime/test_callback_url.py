"""``callback_url_problem``: a callback URL is accepted only if the sender can post to it."""

from __future__ import annotations

import httpx
import pytest

from expertline.runtime.webhooks import callback_url_problem, error_text


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "https://cc.example.test/expertline/events?key=abc",
        "http://[::1]:8080/x",
        "https://user:secret@hooks.example.test/",
        "http://hôte.example.test/",
        "HTTPS://CC.EXAMPLE.TEST/",
    ],
)
def test_urls_the_sender_can_post_to_are_accepted(url: str) -> None:
    assert callback_url_problem(url) is None
    httpx.Request("POST", url)  # the sender's client builds the request


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://[::1", "not a valid URL"),
        ("http://[zz]/", "not a valid URL"),
        ("http://1.2.3.999/", "not a valid URL"),
        ("http://h:abc/", "not a valid URL"),
        ("http://h:99999/", "port 99999"),
        ("http://h:0/", "port 0"),
        ("http://h:-1/", "port -1"),
        ("http://:80/x", "needs a host"),
        ("http:///x", "needs a host"),
        ("ftp://h/", "http:// or https://"),
        ("//h/x", "http:// or https://"),
        ("h/x", "http:// or https://"),
        ("http://a%41/", "invalid host"),
        ("http://exa mple/", "spaces"),
        ("http://h/\x00", "control character"),
        ("http://h/" + "a" * 2000, "at most 2,000"),
        ("", "must not be empty"),
    ],
)
def test_urls_the_sender_could_never_post_to_are_refused(url: str, words: str) -> None:
    problem = callback_url_problem(url)
    assert problem is not None and words in problem, problem


def test_an_error_is_stored_as_one_bounded_printable_line() -> None:
    text = error_text(ValueError("bad\x00url\nhttp://h/" + "x" * 1000))
    assert text.startswith("ValueError: bad?url?http://h/") and len(text) == 500
    assert text.isprintable()
