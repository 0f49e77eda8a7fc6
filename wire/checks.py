"""Field checks with messages that name the field, and the switch that skips them for trusted input.

Pattern checks run in ``__post_init__`` (msgspec calls it on construction and on decode), not as
``msgspec.Meta(pattern=...)``: a pattern costs ~0.7 µs per field on every decode, and the event log's own
replay, which decodes facts that were checked when they were made, would pay it a million times.
Inside ``with trusted():`` the pattern checks are skipped; only the store's replay of its own log uses it.

Frozen Structs are declared ``gc=False``: they hold no reference cycles (values only, never a back reference),
so the garbage collector need not scan the hundreds of thousands a projection keeps.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar

DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
HEX_ID = re.compile(r"[0-9a-f]{16}")
# Kubernetes label syntax: an optional DNS-subdomain prefix and '/', then a name of at most 63 characters.
LABEL_KEY = re.compile(
    r"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
)
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A Docker image reference: [registry/]path[:tag][@sha256:digest], or a bare sha256 digest.
IMAGE_REF = re.compile(
    r"sha256:[a-f0-9]{64}|[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-]{1,2}[a-z0-9]+)*)*"
    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?"
)


def schema_pattern(pattern: re.Pattern[str]) -> dict[str, str]:
    """A pattern for the JSON schema only (``msgspec.Meta(extra_json_schema=...)``); the check is ``fullmatch``."""
    return {"pattern": f"^(?:{pattern.pattern})$"}


_trusted: ContextVar[bool] = ContextVar("corral_trusted_decode", default=False)


@contextlib.contextmanager
def trusted() -> Iterator[None]:
    """Skip pattern checks while decoding input that was checked when it was made (the log's own events)."""
    token = _trusted.set(True)
    try:
        yield
    finally:
        _trusted.reset(token)


def is_trusted() -> bool:
    return _trusted.get()


def dns1123_label(field: str, value: str) -> None:
    if len(value) > 63 or DNS1123_LABEL.fullmatch(value) is None:
        raise ValueError(
            f"{field}: {value!r} is not a DNS-1123 label (at most 63 lowercase letters, digits or '-', "
            "starting and ending with a letter or digit)"
        )


def hex_id(field: str, value: str) -> None:
    if HEX_ID.fullmatch(value) is None:
        raise ValueError(f"{field}: {value!r} is not an id (16 lowercase hex digits)")


_ID_FIELDS: dict[str, Callable[[str, str], None]] = {
    "container_id": hex_id,
    "service_id": hex_id,
    "node": dns1123_label,
    "running": hex_id,  # a tuple of container ids
}

IdChecks = tuple[tuple[str, Callable[[str, str], None]], ...]


def id_checks(cls: type) -> IdChecks:
    """The id and node-name fields of a Struct type, with their checks (for ``check_ids``)."""
    fields: tuple[str, ...] = getattr(cls, "__struct_fields__", ())
    return tuple((f, _ID_FIELDS[f]) for f in fields if f in _ID_FIELDS)


def check_ids(obj: object, plan: IdChecks) -> None:
    """Ids and node names become paths, cgroup names and NATS subjects: check them on every decode of a message
    that crossed a process boundary."""
    for field, check in plan:
        value = getattr(obj, field)
        if isinstance(value, str):
            check(field, value)
        elif isinstance(value, tuple):
            for item in value:
                check(field, item)


def image_ref(field: str, value: str) -> None:
    if len(value) > 255 or IMAGE_REF.fullmatch(value) is None:
        raise ValueError(f"{field}: {value!r} is not an image reference such as 'busybox' or 'repo/name:tag'")


def labels(field: str, value: Mapping[str, str]) -> None:
    for k, v in value.items():
        if len(k) > 253 or LABEL_KEY.fullmatch(k) is None:
            raise ValueError(f"{field}: key {k!r} is not a label key ([prefix/]name, name at most 63 characters)")
        if len(v) > 63 or LABEL_VALUE.fullmatch(v) is None:
            raise ValueError(f"{field}: value {v!r} of {k!r} is not a label value (at most 63 characters)")


def env_names(field: str, value: Mapping[str, str]) -> None:
    for k in value:
        if ENV_NAME.fullmatch(k) is None:
            raise ValueError(f"{field}: {k!r} is not an environment variable name")
