"""Control-protocol framing, keyword parsing and bootstrap events on canned tor output."""

from __future__ import annotations

import pytest

from netspectre.tor.protocol import (
    BootstrapEvent,
    Parser,
    ProtocolError,
    keyvalues,
    parse_bootstrap,
    parse_newnym_delay,
    split_args,
    unquote,
)

# Captured from tor 0.4.9 (GETINFO config-text shortened).
CANNED = (
    b"250-PROTOCOLINFO 1\r\n"
    b"250-AUTH METHODS=COOKIE,SAFECOOKIE "
    b'COOKIEFILE="/run/netspectre/tor/daemon/control.authcookie"\r\n'
    b'250-VERSION Tor="0.4.9.11"\r\n'
    b"250 OK\r\n"
    b"650 STATUS_CLIENT NOTICE BOOTSTRAP PROGRESS=10 TAG=conn_done "
    b'SUMMARY="Connected to a relay"\r\n'
    b"250+config-text=\r\n"
    b"AutomapHostsOnResolve 1\r\n"
    b"..odd line starting with a dot\r\n"
    b"TransPort 127.0.0.1:9040\r\n"
    b".\r\n"
    b"250 OK\r\n"
    b"552 Unrecognized key \"nope\"\r\n"
)


def test_framing_sync_async_data_and_errors() -> None:
    replies = Parser().feed(CANNED)
    assert [r.status for r in replies] == [250, 650, 250, 552]
    info, event, conf, err = replies
    assert info.ok and not info.is_event and len(info.lines) == 4
    assert event.is_event and event.text.startswith("STATUS_CLIENT NOTICE BOOTSTRAP")
    assert conf.lines[0].data == (
        "AutomapHostsOnResolve 1\n.odd line starting with a dot\nTransPort 127.0.0.1:9040"
    )
    assert keyvalues(conf) == {"config-text": [conf.lines[0].data]}
    assert not err.ok and err.text == 'Unrecognized key "nope"'


def test_framing_survives_any_chunking() -> None:
    whole = Parser().feed(CANNED)
    parser = Parser()
    pieces = []
    for i in range(len(CANNED)):
        pieces += parser.feed(CANNED[i : i + 1])
    assert pieces == whole


def test_garbage_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        Parser().feed(b"HTTP/1.1 400 Bad Request\r\n")


def test_getconf_unset_and_repeated_keys() -> None:
    (reply,) = Parser().feed(
        b"250-TransPort=127.0.0.1:9040\r\n250-ControlPort\r\n"
        b"250-DirAuthority=a orport=1 203.0.113.1:7000 AAAA\r\n"
        b"250 DirAuthority=b orport=2 203.0.113.2:7000 BBBB\r\n"
    )
    values = keyvalues(reply)
    assert values["TransPort"] == ["127.0.0.1:9040"]
    assert values["ControlPort"] == []
    assert len(values["DirAuthority"]) == 2


def test_split_args_and_quoting() -> None:
    words, pairs = split_args(
        'AUTH METHODS=COOKIE,SAFECOOKIE COOKIEFILE="/run/a b/c\\"d"'
    )
    assert words == ["AUTH"]
    assert pairs == {"METHODS": "COOKIE,SAFECOOKIE", "COOKIEFILE": '/run/a b/c"d'}
    assert split_args('"127.0.0.1:9040" "[::1]:9040"')[0] == ["127.0.0.1:9040", "[::1]:9040"]
    assert unquote(r"a\nb\101\\") == "a\nbA\\"


@pytest.mark.parametrize(
    ("text", "event"),
    [
        (
            'NOTICE BOOTSTRAP PROGRESS=0 TAG=starting SUMMARY="Starting"',
            BootstrapEvent(0, "starting", "Starting"),
        ),
        (
            'STATUS_CLIENT NOTICE BOOTSTRAP PROGRESS=75 TAG=enough_dirinfo '
            'SUMMARY="Loaded enough directory info to build circuits"',
            BootstrapEvent(75, "enough_dirinfo", "Loaded enough directory info to build circuits"),
        ),
        (
            "STATUS_CLIENT NOTICE BOOTSTRAP PROGRESS=100 TAG=done SUMMARY=\"Done\"",
            BootstrapEvent(100, "done", "Done"),
        ),
        (
            'STATUS_CLIENT WARN BOOTSTRAP PROGRESS=5 TAG=conn SUMMARY="Connecting to a relay" '
            'WARNING="Network is unreachable" REASON=NOROUTE COUNT=3 RECOMMENDATION=ignore '
            'HOSTID="0123456789ABCDEF0123456789ABCDEF01234567" HOSTADDR="203.0.113.1:5000"',
            BootstrapEvent(5, "conn", "Connecting to a relay", warning="Network is unreachable"),
        ),
    ],
)
def test_bootstrap_events(text: str, event: BootstrapEvent) -> None:
    assert parse_bootstrap(text) == event


@pytest.mark.parametrize(
    "text",
    [
        "STATUS_CLIENT NOTICE CIRCUIT_ESTABLISHED",
        "STATUS_CLIENT NOTICE BOOTSTRAP TAG=x",
        "STATUS_CLIENT NOTICE BOOTSTRAP PROGRESS=abc",
        "CIRC 5 BUILT",
        "",
    ],
)
def test_other_events_are_not_bootstrap(text: str) -> None:
    assert parse_bootstrap(text) is None


def test_newnym_rate_limit_notice() -> None:
    assert parse_newnym_delay("NOTICE Rate limiting NEWNYM request: delaying by 9 second(s)") == 9
    assert parse_newnym_delay("NOTICE New control connection opened.") is None
