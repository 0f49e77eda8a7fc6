"""Who a container's process runs as: ``user`` as Docker and Kubernetes take it (``uid``, ``uid:gid``, ``name``,
``name:group``), names looked up in the image's own ``/etc/passwd`` and ``/etc/group``. Pure: the files' text
comes in (read by the caller without following links out of the root)."""

from __future__ import annotations

from typing import NamedTuple


class UserError(ValueError):
    pass


class Identity(NamedTuple):
    uid: int
    gid: int
    groups: tuple[int, ...]  # supplementary groups: those /etc/group lists the user in


def _number(text: str) -> bool:
    """ASCII digits only (``str.isdigit`` also takes "²", which ``int`` refuses)."""
    return text.isascii() and text.isdigit()


def _table(text: str) -> list[list[str]]:
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


def resolve(user: str | None, passwd: str | None, group: str | None) -> Identity:
    """``user`` (None: root) against the image's passwd and group files (None: the image has none)."""
    if not user:
        return Identity(0, 0, ())
    name, _, grp = user.partition(":")
    users = _table(passwd or "")
    uid: int | None = None
    gid: int | None = None
    login = name
    if _number(name):
        uid = int(name)
        entry = next((u for u in users if len(u) > 3 and _number(u[2]) and int(u[2]) == uid), None)
        login = entry[0] if entry else ""
        gid = int(entry[3]) if entry and _number(entry[3]) else None
    else:
        entry = next((u for u in users if u and u[0] == name), None)
        if entry is None or len(entry) < 4 or not _number(entry[2]) or not _number(entry[3]):
            raise UserError(f"user: no user {name!r} in the image's /etc/passwd")
        uid, gid = int(entry[2]), int(entry[3])
    groups = _table(group or "")
    if grp:
        if _number(grp):
            gid = int(grp)
        else:
            found = next((g for g in groups if g and g[0] == grp and len(g) > 2 and _number(g[2])), None)
            if found is None:
                raise UserError(f"user: no group {grp!r} in the image's /etc/group")
            gid = int(found[2])
    primary = gid if gid is not None else 0  # a uid the image does not know: group 0, as Docker does
    members = {int(g[2]) for g in groups if len(g) > 3 and _number(g[2]) and login and login in g[3].split(",")}
    return Identity(uid, primary, tuple(sorted(members - {primary})))
