"""This host's system UUID, which decides whether it is a filesystem's master or a client
(its `Role`)."""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # uuid (with platform) is loaded where a UUID is made: commands start fast
    import uuid

SYSTEM_UUID_FILE = Path("/opt/famfs/system_uuid")  # shared with upstream famfs
SYSTEM_UUID_ENV = "FAMFS_PY_SYSTEM_UUID"


class Role(StrEnum):
    """What a host is to a filesystem: the master (its system UUID is the superblock's, the
    one writer of the log) or a client (it replays the log)."""

    MASTER = "master"
    CLIENT = "client"

    @staticmethod
    def of(host: uuid.UUID, master: uuid.UUID) -> Role:
        return Role.MASTER if host == master else Role.CLIENT

    @property
    def upstream_name(self) -> str:
        """What upstream's fsck calls it."""
        return "Owner" if self is Role.MASTER else "Client"

    @staticmethod
    def from_upstream_name(name: str) -> Role:
        return Role.MASTER if name == "Owner" else Role.CLIENT


def parse_uuid(text: str, what: str = "system UUID") -> uuid.UUID:
    import uuid

    try:
        return uuid.UUID(text.strip())
    except ValueError:
        raise ValueError(f"{what} {text.strip()!r} is not a UUID") from None


def system_uuid(override: str | None = None, *, create: bool = True) -> uuid.UUID:
    """The system UUID: `override`, else $FAMFS_PY_SYSTEM_UUID, else /opt/famfs/system_uuid
    (created, mode 0444, when missing and `create`)."""
    text = override or os.environ.get(SYSTEM_UUID_ENV)
    if text:
        return parse_uuid(text)
    try:
        return parse_uuid(SYSTEM_UUID_FILE.read_text(), f"{SYSTEM_UUID_FILE} holds")
    except FileNotFoundError:
        if not create:
            raise
    import uuid

    new = uuid.uuid4()
    SYSTEM_UUID_FILE.parent.mkdir(parents=True, exist_ok=True)
    tmp = SYSTEM_UUID_FILE.with_name(f".system_uuid.{os.getpid()}")
    tmp.write_text(f"{new}\n")
    tmp.chmod(0o444)
    try:
        os.link(tmp, SYSTEM_UUID_FILE)  # never replace one another process just wrote
    except FileExistsError:
        tmp.unlink()
        return parse_uuid(SYSTEM_UUID_FILE.read_text(), f"{SYSTEM_UUID_FILE} holds")
    tmp.unlink()
    return new
