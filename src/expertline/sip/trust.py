"""What the SIP front trusts: who may join an existing task, and where it may send a call.

**Attaching.** By default a SIP call never joins a task that already exists: its external id is
namespaced (``sip/task_request.py``) and a collision is refused. A contact center that creates
tasks over HTTP and then sends the call by SIP (pre-routing) may let the call join that task,
with two proofs: the INVITE comes from a trusted source address (``sip_trusted``), and it
carries ``X-Expertline-Attach-Proof: hex(HMAC-SHA256(key, external id))``, the key being a
secret shared with the contact center (named by ``sip_attach_key_env``, read from the
environment). Source addresses alone are weak (UDP can be spoofed); the proof is the real gate.

**Outbound targets.** In proxy mode the front calls the phone the accepting expert gave. It
calls only hosts it knows: the hosts of the configured experts' phone URIs, plus the
``sip_targets`` setting (names, ``*.domain`` wildcards, addresses, networks). Anything else is
refused before any packet is sent, and the delivery counts as failed.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from expertline.routing.model import RoutingConfig
from expertline.sip.message import ParseError, SipUri, parse_uri

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MIN_KEY_BYTES = 16


def parse_network(entry: str) -> Network:
    """``10.0.0.0/8``, ``127.0.0.1``, ``::1`` -> a network; ValueError with a clear message."""
    try:
        return ipaddress.ip_network(entry.strip().strip("[]"), strict=False)
    except ValueError:
        raise ValueError(f"{entry!r} is not an IP address or network (like 10.0.0.0/8)") from None


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    return tuple(parse_network(e) for e in entries if e.strip())


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def in_networks(host: str, networks: Iterable[Network]) -> bool:
    address = _address(host)
    if address is None:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in net for net in networks)


# --- attaching ---------------------------------------------------------------------------------


def attach_proof(key: bytes, external_id: str) -> str:
    """The value of ``X-Expertline-Attach-Proof`` for an external id (hex HMAC-SHA256)."""
    return hmac.new(key, external_id.encode("utf-8"), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class AttachPolicy:
    """Who may join a call to an existing task. The default: nobody."""

    key: bytes | None = None
    trusted: tuple[Network, ...] = ()

    @property
    def enabled(self) -> bool:
        return self.key is not None and bool(self.trusted)

    def refusal(self, external_id: str, proof: str, source: str) -> str | None:
        """Why this INVITE may not join the task of ``external_id`` (None: it may).

        The reasons are safe to send back: they say which rule failed, never the expected proof.
        """
        if self.key is None or not self.trusted:
            return "attaching to an existing task is not enabled"
        if not in_networks(source, self.trusted):
            return "attaching is allowed only from trusted peers"
        expected = attach_proof(self.key, external_id)
        if not hmac.compare_digest(expected, proof.strip().lower()):
            return "the attach proof does not match the external id"
        return None


def attach_policy(
    key_env: str | None, trusted: Iterable[str], environ: dict[str, str]
) -> AttachPolicy:
    """The policy from the settings; ValueError when attaching is asked for but not set up."""
    networks = parse_networks(trusted)
    if key_env is None:
        return AttachPolicy(None, networks)
    key = environ.get(key_env, "")
    if len(key.encode("utf-8")) < MIN_KEY_BYTES:
        raise ValueError(
            f"sip_attach_key_env names {key_env}, which must hold a secret of at least "
            f"{MIN_KEY_BYTES} bytes"
        )
    if not networks:
        raise ValueError("sip_attach_key_env needs sip_trusted (the peers that may attach)")
    return AttachPolicy(key.encode("utf-8"), networks)


# --- outbound targets --------------------------------------------------------------------------


def target_host(uri: SipUri) -> str:
    """The host a request to ``uri`` goes to (``maddr`` overrides the host, RFC 3261 §19.1.1)."""
    return (uri.params.get("maddr") or uri.host).strip("[]").lower()


@dataclass(frozen=True)
class _Allowed:
    names: frozenset[str]
    suffixes: tuple[str, ...]  # ".example.test" for "*.example.test"
    networks: tuple[Network, ...]


def _allowed(entries: Iterable[str]) -> _Allowed:
    names: set[str] = set()
    suffixes: list[str] = []
    networks: list[Network] = []
    for raw in entries:
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry.startswith("*."):
            suffixes.append(entry[1:])
            continue
        try:
            networks.append(parse_network(entry))
        except ValueError:
            names.add(entry.strip("[]"))
    return _Allowed(frozenset(names), tuple(suffixes), tuple(networks))


def check_target_entry(entry: str) -> None:
    """ValueError unless ``entry`` is a host name, ``*.domain``, an address or a network."""
    text = entry.strip()
    name = text[2:] if text.startswith("*.") else text
    try:
        parse_network(name)
        return
    except ValueError:
        pass
    labels = name.split(".")
    if not name or any(not label or not label.replace("-", "").isalnum() for label in labels):
        raise ValueError(f"{entry!r} is not a host name, *.domain, address or network")


def phone_hosts(phones: Iterable[str]) -> list[str]:
    """The hosts of the SIP URIs among ``phones`` (numbers and ``tel:`` are never proxied)."""
    hosts: list[str] = []
    for phone in phones:
        try:
            uri = parse_uri(phone)
        except ParseError:
            continue
        if uri.is_sip and uri.host:
            hosts.append(target_host(uri))
    return hosts


class OutboundTargets:
    """The hosts the front may send an INVITE to: the configured experts' phone hosts (kept
    current as the configuration changes) and the ``extra`` entries (``sip_targets``)."""

    def __init__(
        self, extra: Iterable[str] = (), config: Callable[[], RoutingConfig | None] | None = None
    ) -> None:
        self.extra = tuple(extra)
        for entry in self.extra:
            check_target_entry(entry)
        self._config = config or (lambda: None)
        self._version: int | None = None
        self._allowed = _allowed(self.extra)

    def _current(self) -> _Allowed:
        config = self._config()
        if config is not None and config.version != self._version:
            phones = [expert.phone for expert in config.experts.values()]
            self._allowed = _allowed([*phone_hosts(phones), *self.extra])
            self._version = config.version
        return self._allowed

    def allows_name(self, uri: SipUri) -> bool:
        """Allowed by its host as written (a configured name, a wildcard, an address)."""
        allowed = self._current()
        host = target_host(uri)
        if host in allowed.names or any(host.endswith(s) for s in allowed.suffixes):
            return True
        return in_networks(host, allowed.networks)

    @property
    def has_networks(self) -> bool:
        """Whether a resolved address can still make a name allowed (worth a DNS lookup)."""
        return bool(self._current().networks)

    def allows_address(self, address: str) -> bool:
        return in_networks(address, self._current().networks)


__all__ = [
    "AttachPolicy",
    "OutboundTargets",
    "attach_policy",
    "attach_proof",
    "check_target_entry",
    "parse_networks",
]
