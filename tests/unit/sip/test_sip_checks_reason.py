"""Which CANCELs say an upstream timer ended the call (RFC 3326 Reason)."""

from __future__ import annotations

import pytest

from expertline.sip.checks import upstream_timeout
from expertline.sip.message import Headers, Request


def cancel(*reasons: str) -> Request:
    headers = Headers()
    for reason in reasons:
        headers.add("Reason", reason)
    return Request(headers, b"", "CANCEL", "sip:+18005550100@127.0.0.1")


@pytest.mark.parametrize(
    ("reasons", "found"),
    [
        (('SIP;cause=408;text="Request Timeout"',), 'SIP;cause=408;text="Request Timeout"'),
        (("sip ; cause=408",), "sip ; cause=408"),
        (("Q.850;cause=102",), "Q.850;cause=102"),
        (("Q.850;cause=16", "SIP;cause=408"), "SIP;cause=408"),
        (("Q.850;cause=16",), None),
        (("SIP;cause=487",), None),
        (("SIP;cause=408x",), None),
        (("SIP;cau se=408",), None),
        (("Q.850;cause=408",), None),
        ((), None),
    ],
)
def test_upstream_timeout_reads_the_reason(reasons: tuple[str, ...], found: str | None) -> None:
    assert upstream_timeout(cancel(*reasons)) == found
