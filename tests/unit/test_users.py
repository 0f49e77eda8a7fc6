"""Who a container runs as: Docker's --user forms against the image's own passwd and group files."""

from __future__ import annotations

import msgspec
import pytest

from nodelet.users import Identity, UserError, resolve
from tests.builders import spec
from wire.spec import ContainerSpec

PASSWD = """root:x:0:0:root:/root:/bin/sh
# a comment
app:x:1000:1000::/home/app:/bin/sh
nobody:x:65534:65534::/:/bin/false
"""
GROUP = """root:x:0:
app:x:1000:
audio:x:29:app,other
video:x:44:app
nogroup:x:65534:
"""


@pytest.mark.parametrize(
    ("user", "passwd", "group", "want"),
    [
        (None, PASSWD, GROUP, Identity(0, 0, ())),
        ("", PASSWD, GROUP, Identity(0, 0, ())),
        ("app", PASSWD, GROUP, Identity(1000, 1000, (29, 44))),  # its groups from /etc/group
        ("1000", PASSWD, GROUP, Identity(1000, 1000, (29, 44))),  # a uid the image knows: its gid and groups
        ("1000:44", PASSWD, GROUP, Identity(1000, 44, (29,))),
        ("app:nogroup", PASSWD, GROUP, Identity(1000, 65534, (29, 44))),
        ("4242", PASSWD, GROUP, Identity(4242, 0, ())),  # unknown to the image: gid 0, as Docker
        ("4242:4242", None, None, Identity(4242, 4242, ())),  # numbers need no files
        ("nobody", PASSWD, GROUP, Identity(65534, 65534, ())),
        ("root", PASSWD, GROUP, Identity(0, 0, ())),
        ("0001000", PASSWD, GROUP, Identity(1000, 1000, (29, 44))),  # a number, however written
        ("odd", "odd:x:7:\u00b2::/:/bin/sh\n", None, None),  # "²" is a digit to str.isdigit, not to int
    ],
)
def test_resolve(user: str | None, passwd: str | None, group: str | None, want: Identity | None) -> None:
    if want is None:
        with pytest.raises(UserError):
            resolve(user, passwd, group)
        return
    assert resolve(user, passwd, group) == want


@pytest.mark.parametrize(
    ("user", "passwd", "why"),
    [("ghost", PASSWD, "no user 'ghost'"), ("app", None, "no user 'app'"), ("app:ghosts", PASSWD, "no group")],
)
def test_unknown_names(user: str, passwd: str | None, why: str) -> None:
    with pytest.raises(UserError, match=why):
        resolve(user, passwd, GROUP)


@pytest.mark.parametrize("user", ["0", "root", "0:1000", "root:app"])
def test_run_as_non_root_refuses_root_at_submission(user: str) -> None:
    raw = msgspec.to_builtins(spec()) | {"user": user, "run_as_non_root": True}
    with pytest.raises(msgspec.ValidationError, match="run_as_non_root"):
        msgspec.convert(raw, ContainerSpec)


@pytest.mark.parametrize("user", ["x:y:z", "-1", "a b", "$(id)", "12345678901", ""])
def test_user_forms_are_checked(user: str) -> None:
    raw = msgspec.to_builtins(spec()) | {"user": user}
    with pytest.raises(msgspec.ValidationError, match="user"):
        msgspec.convert(raw, ContainerSpec)
