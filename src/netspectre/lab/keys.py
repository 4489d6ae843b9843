"""Keys of the private network's tors: authority certificates from tor-gencert, and relay
identities generated ahead of start (`tor --list-fingerprint`) so the DirAuthority lines can
name them. Both run in the host namespace: they open no sockets.
"""

from __future__ import annotations

from pathlib import Path

from netspectre import system
from netspectre.errors import TorError
from netspectre.lab.spec import Relay
from netspectre.lab.torrc import Authority


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)


def relay_fingerprint(data: Path, *, defaults: Path) -> str:
    """Create the relay's identity keys in its DataDirectory; return its RSA fingerprint."""
    _private_dir(data)
    tor = system.require("tor")
    system.run([
        tor, "--list-fingerprint", "--DataDirectory", str(data), "--ORPort", "9001",
        "--defaults-torrc", str(defaults), "-f", str(defaults), "--quiet",
    ])
    return read_fingerprint(data)


def read_fingerprint(data: Path) -> str:
    try:
        text = (data / "fingerprint").read_text().split()
    except OSError as exc:
        raise TorError(f"no fingerprint in {data}: {exc}") from None
    return text[1] if len(text) == 2 else ""


def _identity_key(path: Path) -> bool:
    """An RSA-2048 authority identity key from openssl, if it is there: tor-gencert's own
    RSA-3072 takes 1-6 s per authority on a busy 2-core machine, the longest step of `up`;
    Tor accepts any size for a throwaway lab's authorities."""
    openssl = system.which("openssl")
    if openssl is None:
        return False
    result = system.run(
        [openssl, "genrsa", "-traditional", "-out", str(path), "2048"], check=False
    )
    return result.returncode == 0 and path.is_file()


def authority(r: Relay, data: Path, *, defaults: Path) -> Authority:
    """Authority certificate (tor-gencert, 12 months) plus the relay identity."""
    keys = data / "keys"
    _private_dir(keys)
    gencert = system.require("tor-gencert")
    create = [] if _identity_key(keys / "authority_identity_key") else ["--create-identity-key"]
    system.run(
        [
            gencert, *create, "--passphrase-fd", "0", "-m", "12",
            "-a", f"{r.v4}:{r.dir_port}",
            "-i", str(keys / "authority_identity_key"),
            "-s", str(keys / "authority_signing_key"),
            "-c", str(keys / "authority_certificate"),
        ],
        input="\n",
    )
    v3ident = ""
    for line in (keys / "authority_certificate").read_text().splitlines():
        if line.startswith("fingerprint "):
            v3ident = line.split()[1]
    if not v3ident:
        raise TorError(f"tor-gencert wrote no fingerprint for {r.nick}")
    fingerprint = relay_fingerprint(data, defaults=defaults)
    return Authority(relay=r, v3ident=v3ident, fingerprint=fingerprint)
