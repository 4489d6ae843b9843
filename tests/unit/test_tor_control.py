"""The control client against a scripted fake tor on a socketpair (no tor, no network)."""

from __future__ import annotations

import hashlib
import hmac
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from netspectre.tor.control import ControlError, Controller

COOKIE = bytes(range(32))
SERVER_NONCE = bytes(range(100, 132))


class FakeTor:
    """Answers one command per line, like tor; `methods` is what PROTOCOLINFO offers."""

    def __init__(self, sock: socket.socket, cookie_path: Path, methods: str) -> None:
        self.sock = sock
        self.cookie_path = cookie_path
        self.methods = methods
        self.received: list[str] = []
        self.lie = False  # answer AUTHCHALLENGE with a wrong SERVERHASH
        self.newnyms = 0
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def send(self, text: str) -> None:
        self.sock.sendall(text.replace("\n", "\r\n").encode())

    def serve(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = self.sock.recv(4096)
            except OSError:
                return
            if not chunk:
                return
            buffer += chunk
            while b"\r\n" in buffer:
                raw, buffer = buffer.split(b"\r\n", 1)
                self.handle(raw.decode())

    def handle(self, line: str) -> None:
        self.received.append(line)
        verb, _, rest = line.partition(" ")
        if verb == "PROTOCOLINFO":
            self.send(
                "250-PROTOCOLINFO 1\n"
                f'250-AUTH METHODS={self.methods} COOKIEFILE="{self.cookie_path}"\n'
                '250-VERSION Tor="0.4.9.11"\n250 OK\n'
            )
        elif verb == "AUTHCHALLENGE":
            client_nonce = bytes.fromhex(rest.split()[1])
            key = b"Tor safe cookie authentication server-to-controller hash"
            digest = hmac.new(key, COOKIE + client_nonce + SERVER_NONCE, hashlib.sha256)
            server_hash = ("00" * 32) if self.lie else digest.hexdigest()
            self.client_nonce = client_nonce
            self.send(
                f"250 AUTHCHALLENGE SERVERHASH={server_hash} SERVERNONCE={SERVER_NONCE.hex()}\n"
            )
        elif verb == "AUTHENTICATE":
            if "SAFECOOKIE" in self.methods:
                key = b"Tor safe cookie authentication controller-to-server hash"
                good = hmac.new(
                    key, COOKIE + self.client_nonce + SERVER_NONCE, hashlib.sha256
                ).hexdigest()
            elif "COOKIE" in self.methods:
                good = COOKIE.hex()
            else:
                good = ""
            self.send("250 OK\n" if rest == good else "515 Authentication failed\n")
        elif verb == "GETINFO":
            self.send(
                # An event slipped in before the reply, as tor does.
                '650 STATUS_CLIENT NOTICE BOOTSTRAP PROGRESS=15 TAG=handshake_done '
                'SUMMARY="Handshake with a relay done"\n'
                '250-status/bootstrap-phase=NOTICE BOOTSTRAP PROGRESS=15 TAG=handshake_done '
                'SUMMARY="Handshake with a relay done"\n250-version=0.4.9.11\n250 OK\n'
            )
        elif verb == "GETCONF":
            self.send("250-TransPort=127.0.0.1:9040\n250 ControlPort\n")
        elif verb == "SETEVENTS":
            self.send("250 OK\n")
        elif line == "SIGNAL NEWNYM":
            self.newnyms += 1
            self.send("250 OK\n")
            if self.newnyms > 1:
                self.send("650 NOTICE Rate limiting NEWNYM request: delaying by 7 second(s)\n")
        else:
            self.send(f'510 Unrecognized command "{verb}"\n')


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Callable[[str], tuple[Controller, FakeTor]]]:
    made: list[Controller] = []
    cookie = tmp_path / "control.authcookie"
    cookie.write_bytes(COOKIE)

    def make(methods: str) -> tuple[Controller, FakeTor]:
        ours, theirs = socket.socketpair()
        fake = FakeTor(theirs, cookie, methods)
        ctl = Controller(ours, address="fake")
        made.append(ctl)
        return ctl, fake

    yield make
    for ctl in made:
        ctl.close()


@pytest.mark.parametrize("methods", ["COOKIE,SAFECOOKIE", "COOKIE", "NULL"])
def test_authenticate_picks_the_best_method(
    pair: Callable[[str], tuple[Controller, FakeTor]], methods: str
) -> None:
    ctl, fake = pair(methods)
    used = ctl.authenticate()
    assert used == ("SAFECOOKIE" if "SAFECOOKIE" in methods else methods)


def test_safecookie_rejects_a_server_that_does_not_know_the_cookie(
    pair: Callable[[str], tuple[Controller, FakeTor]],
) -> None:
    ctl, fake = pair("COOKIE,SAFECOOKIE")
    fake.lie = True
    with pytest.raises(ControlError, match="safe-cookie check"):
        ctl.authenticate()
    assert not any(line.startswith("AUTHENTICATE") for line in fake.received)


def test_password_only_tor_is_refused_clearly(
    pair: Callable[[str], tuple[Controller, FakeTor]],
) -> None:
    ctl, _ = pair("HASHEDPASSWORD")
    with pytest.raises(ControlError, match="HASHEDPASSWORD"):
        ctl.authenticate()


def test_getinfo_getconf_and_queued_events(
    pair: Callable[[str], tuple[Controller, FakeTor]],
) -> None:
    ctl, _ = pair("NULL")
    ctl.authenticate()
    info = ctl.getinfo("status/bootstrap-phase", "version")
    assert info["version"] == "0.4.9.11"
    assert "PROGRESS=15" in info["status/bootstrap-phase"]
    event = ctl.next_event(0)
    assert event is not None and event.text.startswith("STATUS_CLIENT NOTICE BOOTSTRAP")
    assert ctl.next_event(0.01) is None
    assert ctl.getconf("TransPort", "ControlPort") == {
        "TransPort": ["127.0.0.1:9040"], "ControlPort": []}


def test_error_replies_raise_with_tors_message(
    pair: Callable[[str], tuple[Controller, FakeTor]],
) -> None:
    ctl, _ = pair("NULL")
    with pytest.raises(ControlError, match="510 Unrecognized command"):
        ctl.command("FROBNICATE")
    assert ctl.request("FROBNICATE").status == 510


def test_newnym_notice_arrives_after_the_reply(
    pair: Callable[[str], tuple[Controller, FakeTor]],
) -> None:
    ctl, _ = pair("NULL")
    ctl.signal("NEWNYM")
    ctl.signal("NEWNYM")
    ctl.getinfo("version")
    texts = [e.text for e in iter(lambda: ctl.next_event(0), None)]
    assert "NOTICE Rate limiting NEWNYM request: delaying by 7 second(s)" in texts


def test_closed_connection_is_an_error() -> None:
    ours, theirs = socket.socketpair()
    theirs.close()
    with (
        Controller(ours, address="gone") as ctl,
        pytest.raises(ControlError, match="closed|failed"),
    ):
        ctl.request("GETINFO version", timeout=1)


def test_connect_errors_name_the_address(tmp_path: Path) -> None:
    with pytest.raises(ControlError, match="cannot connect") as err:
        Controller.connect(tmp_path / "nothing-here")
    assert str(tmp_path) in err.value.message
    with pytest.raises(ControlError, match="neither a socket path"):
        Controller.connect("control")


def test_a_symlinked_cookie_is_not_followed(
    pair: Callable[[str], tuple[Controller, FakeTor]], tmp_path: Path
) -> None:
    ctl, fake = pair("COOKIE")
    secret = tmp_path / "secret"
    secret.write_bytes(b"S" * 32)
    fake.cookie_path = tmp_path / "planted"
    fake.cookie_path.symlink_to(secret)
    with pytest.raises(ControlError, match="cannot read tor's control cookie"):
        ctl.authenticate()
    assert not any(line.startswith("AUTHENTICATE") for line in fake.received)
