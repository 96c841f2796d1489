"""Transaction state machines: RFC 3261 §17 behaviour, driven by events, no clock, no sockets."""

from __future__ import annotations

import pytest

from expertline.machine import IllegalTransition
from expertline.sip.message import Request, Response, make_response, parse_message
from expertline.sip.transaction import (
    MACHINES,
    TRANSACTIONS,
    ClientInvite,
    ClientNonInvite,
    Deliver,
    ServerInvite,
    ServerNonInvite,
    StartTimer,
    StopTimer,
    Terminated,
    TimedOut,
    TimerValues,
    Transmit,
)

T = TimerValues(t1=0.5, t2=4.0, t4=5.0, timer_d=32.0)


def request(method: str = "INVITE") -> Request:
    raw = (
        f"{method} sip:+18005550100@127.0.0.1 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKabc\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:caller@h>;tag=1\r\nTo: <sip:+18005550100@h>\r\n"
        f"Call-ID: call-1\r\nCSeq: 1 {method}\r\nRoute: <sip:next;lr>\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    msg = parse_message(raw)
    assert isinstance(msg, Request)
    return msg


def response(req: Request, status: int) -> Response:
    return make_response(req, status, to_tag="t1" if status > 100 else None)


def timers(commands: list[object]) -> dict[str, float]:
    return {c.name: c.delay for c in commands if isinstance(c, StartTimer)}


def test_server_invite_final_is_retransmitted_with_timer_g_until_ack() -> None:
    req = request()
    tx = ServerInvite(req, reliable=False, timers=T)
    trying = response(req, 100)
    assert tx.handle("send_1xx", trying) == [Transmit(trying)]
    # A retransmitted INVITE gets the last provisional again.
    assert tx.handle("request", req) == [Transmit(trying)]
    final = response(req, 302)
    commands = tx.handle("send_final", final)
    assert commands[0] == Transmit(final)
    assert timers(commands) == {"G": 0.5, "H": 32.0}
    assert tx.state == "completed"
    delays = []
    for _ in range(5):
        commands = tx.handle("timer_G")
        assert commands[0] == Transmit(final)
        delays.append(timers(commands)["G"])
    assert delays == [1.0, 2.0, 4.0, 4.0, 4.0]  # doubles, capped at T2
    assert tx.handle("request", req) == [Transmit(final)]
    commands = tx.handle("ack", req)
    assert StopTimer("G") in commands and StopTimer("H") in commands
    assert timers(commands) == {"I": 5.0}
    assert tx.state == "confirmed"
    assert tx.handle("ack", req) == []  # absorbed
    assert tx.handle("timer_I") == [Terminated()]


def test_server_invite_without_ack_times_out_with_timer_h() -> None:
    req = request()
    tx = ServerInvite(req, reliable=False, timers=T)
    tx.handle("send_final", response(req, 480))
    commands = tx.handle("timer_H")
    assert TimedOut("H") in commands and commands[-1] == Terminated()


def test_server_invite_reliable_transport_has_no_g_and_zero_i() -> None:
    req = request()
    tx = ServerInvite(req, reliable=True, timers=T)
    assert timers(tx.handle("send_final", response(req, 404))) == {"H": 32.0}
    assert timers(tx.handle("ack", req)) == {"I": 0.0}


def test_server_invite_2xx_goes_to_accepted_and_passes_retransmissions() -> None:
    req = request()
    tx = ServerInvite(req, reliable=False, timers=T)
    ok = response(req, 200)
    assert timers(tx.handle("send_2xx", ok)) == {"L": 32.0}
    assert tx.handle("send_2xx", ok) == [Transmit(ok)]
    assert tx.handle("request", req) == []
    assert tx.handle("timer_L") == [Terminated()]


def test_undefined_transition_raises() -> None:
    req = request()
    tx = ServerInvite(req, reliable=False, timers=T)
    tx.handle("send_final", response(req, 486))
    with pytest.raises(IllegalTransition):
        tx.handle("send_1xx", response(req, 180))


def test_server_non_invite_timer_j() -> None:
    req = request("OPTIONS")
    tx = ServerNonInvite(req, reliable=False, timers=T)
    assert tx.handle("request", req) == []  # trying: nothing to resend yet
    ok = response(req, 200)
    assert timers(tx.handle("send_final", ok)) == {"J": 32.0}
    assert tx.handle("request", req) == [Transmit(ok)]
    assert tx.handle("timer_J") == [Terminated()]
    tcp = ServerNonInvite(req, reliable=True, timers=T)
    assert timers(tcp.handle("send_final", ok)) == {"J": 0.0}


def test_client_invite_retransmits_with_timer_a_and_times_out_with_b() -> None:
    req = request()
    tx = ClientInvite(req, reliable=False, timers=T)
    commands = tx.start()
    assert commands[0] == Transmit(req)
    assert timers(commands) == {"A": 0.5, "B": 32.0}
    assert [timers(tx.handle("timer_A"))["A"] for _ in range(3)] == [1.0, 2.0, 4.0]
    commands = tx.handle("timer_B")
    assert TimedOut("B") in commands and commands[-1] == Terminated()


def test_client_invite_non_2xx_is_acked_and_absorbed_in_completed() -> None:
    req = request()
    tx = ClientInvite(req, reliable=False, timers=T)
    tx.start()
    ringing = response(req, 180)
    commands = tx.handle("recv_1xx", ringing)
    assert Deliver(ringing) in commands and StopTimer("A") in commands
    busy = response(req, 486)
    commands = tx.handle("recv_final", busy)
    acks = [c.message for c in commands if isinstance(c, Transmit)]
    assert len(acks) == 1
    ack = acks[0]
    assert isinstance(ack, Request) and ack.method == "ACK" and ack.uri == req.uri
    assert ack.top_via.branch == req.top_via.branch  # same transaction (RFC 3261 §17.1.1.3)
    assert ack.to.tag == "t1" and str(ack.cseq) == "1 ACK"
    assert ack.headers.get_all("Route") == ["<sip:next;lr>"]
    assert Deliver(busy) in commands and timers(commands) == {"D": 32.0}
    assert tx.handle("recv_final", busy) == [Transmit(ack)]  # retransmitted final: ACK again
    assert tx.handle("timer_D") == [Terminated()]


def test_client_invite_2xx_retransmissions_go_up_until_timer_m() -> None:
    req = request()
    tx = ClientInvite(req, reliable=True, timers=T)
    assert timers(tx.start()) == {"B": 32.0}  # no Timer A on reliable transports
    ok = response(req, 200)
    commands = tx.handle("recv_2xx", ok)
    assert Deliver(ok) in commands and timers(commands) == {"M": 32.0}
    assert tx.handle("recv_2xx", ok) == [Deliver(ok)]
    assert tx.handle("timer_M") == [Terminated()]


def test_client_non_invite_timers_e_f_k() -> None:
    req = request("BYE")
    tx = ClientNonInvite(req, reliable=False, timers=T)
    assert timers(tx.start()) == {"E": 0.5, "F": 32.0}
    assert [timers(tx.handle("timer_E"))["E"] for _ in range(5)] == [1.0, 2.0, 4.0, 4.0, 4.0]
    tx.handle("recv_1xx", response(req, 100))
    assert timers(tx.handle("timer_E"))["E"] == 4.0  # proceeding: T2
    ok = response(req, 200)
    commands = tx.handle("recv_final", ok)
    assert Deliver(ok) in commands and timers(commands) == {"K": 5.0}
    assert tx.handle("recv_final", ok) == []
    assert tx.handle("timer_K") == [Terminated()]
    timeout = ClientNonInvite(req, reliable=False, timers=T)
    timeout.start()
    assert TimedOut("F") in timeout.handle("timer_F")


def test_every_table_row_names_an_existing_action() -> None:
    classes = {cls.MACHINE.name: cls for cls in TRANSACTIONS}
    assert set(classes) == {machine.name for machine in MACHINES}
    for machine in MACHINES:
        for state, row in machine.table.items():
            for event in row:
                action = machine.actions[(state, event)]
                assert action in classes[machine.name].ACTIONS, (machine.name, action)


def test_docs_show_the_current_transition_tables() -> None:
    from pathlib import Path

    from expertline.sip.transaction import markdown_tables

    docs = Path(__file__).parents[3] / "docs" / "sip-states.md"
    assert markdown_tables() in docs.read_text(), "regenerate docs/sip-states.md"


def test_every_timer_a_transaction_starts_has_its_event_in_that_table() -> None:
    """A timer that fires into a table without its event would be dropped: each ``StartTimer``
    a transaction can issue names a timer whose event its machine handles somewhere."""
    from expertline.sip.transaction import Timer, TxEvent

    assert Timer.G.event is TxEvent.TIMER_G
    started = {
        ServerInvite: {Timer.G, Timer.H, Timer.I, Timer.L},
        ServerNonInvite: {Timer.J},
        ClientInvite: {Timer.A, Timer.B, Timer.D, Timer.M},
        ClientNonInvite: {Timer.E, Timer.F, Timer.K},
    }
    assert set().union(*started.values()) == set(Timer)
    for cls, timers_of_cls in started.items():
        events = {event for row in cls.MACHINE.table.values() for event in row}
        timer_events = {event for event in events if event.startswith("timer_")}
        assert timer_events == {timer.event for timer in timers_of_cls}, cls.MACHINE.name


def test_the_transaction_state_only_moves_through_its_machine() -> None:
    req = request()
    tx = ClientInvite(req, reliable=False, timers=T)
    tx.start()
    assert tx.state == "calling" and tx.kind == "client INVITE"
    tx.handle("recv_1xx", response(req, 180))  # type: ignore[arg-type]
    with pytest.raises(IllegalTransition, match="client INVITE: no transition from 'proceeding'"):
        tx.handle("timer_A")  # type: ignore[arg-type]
    assert tx.state == "proceeding"  # a refused event changes nothing
