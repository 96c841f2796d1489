"""An entry point's own SIP mode comes from the routing configuration the runtime holds: no
database read and no poller in the front, and a new configuration applies at the next INVITE."""

from __future__ import annotations

from dataclasses import dataclass, replace

from expertline.config.validate import load_yaml
from expertline.eligibility.build import build_routing_config
from expertline.routing.model import RoutingConfig
from expertline.sip.front import SipFront

DOC = """
experts:
  - {id: alice, name: Alice, phone: "sip:1001@pbx.example.test"}
queues:
  - {id: billing, name: Billing, select: "true"}
entry_points:
  - {dialed_number: "+18005550100", queue: billing}
  - {dialed_number: "+18005550199", queue: billing, sip_mode: proxy}
  - {dialed_number: "+18005550177", queue: billing, sip_mode: redirect}
"""


def test_the_routing_configuration_carries_each_entry_points_own_mode() -> None:
    config = build_routing_config(load_yaml(DOC), version=3)
    assert config.sip_modes == {"+18005550199": "proxy", "+18005550177": "redirect"}
    assert "+18005550100" in config.entry_points  # no mode of its own: the node's


@dataclass
class ConfigOnlyPort:
    """Only what the front reads when an INVITE arrives, before any task exists."""

    config: RoutingConfig


def test_the_front_reads_the_mode_from_the_port_at_each_invite() -> None:
    config = build_routing_config(load_yaml(DOC), version=3)
    port = ConfigOnlyPort(config)
    front = SipFront(port, "127.0.0.1", 0, mode="redirect")  # type: ignore[arg-type]
    assert front.mode_for("+18005550199") == "proxy"
    assert front.mode_for("+18005550100") is None  # the node's mode applies
    port.config = replace(config, version=4, sip_modes={"+18005550100": "proxy"})
    assert front.mode_for("+18005550100") == "proxy"  # the runtime's new version, at once
    assert front.mode_for("+18005550199") is None
