"""Who may reach the studio: loopback only, unless a password guards another address. Checked before Gradio loads."""

import ipaddress
from pathlib import Path

from ..errors import MorphError

LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_auth(auth: str | None) -> tuple[str, str] | None:
    """--auth USER:PASSWORD as (user, password)."""
    if auth is None:
        return None
    user, colon, password = auth.partition(":")
    if not colon or not user or not password:
        raise MorphError("--auth: give USER:PASSWORD, both non-empty (e.g. --auth me:a-long-secret)")
    return user, password


def check_access(host: str, auth: str | None, root: str) -> tuple[Path, tuple[str, str] | None]:
    """The root folder and the credentials the studio serves with; refused: another host without --auth, a root
    that is not a folder."""
    credentials = parse_auth(auth)
    if not is_loopback(host) and credentials is None:
        raise MorphError(f"--host {host}: the studio renders and writes files for whoever reaches it; listening "
                         "beyond this machine needs --auth USER:PASSWORD")
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise MorphError(f"--root: {root} is not a folder; give the folder the studio reads configs and models "
                         "from and writes outputs to")
    return folder.resolve(), credentials
