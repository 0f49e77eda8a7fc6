"""What the log's writer accepts, its reader decodes — for every event type, with values at, inside and past
every bound msgspec declares (hypothesis does not read msgspec.Meta, so the strategies are derived from
``msgspec.inspect``)."""

from __future__ import annotations

import math
from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store.errors import InvalidAppend
from store.log import decode_batch, encode_checked
from tests.builders import cid
from wire.codec import decode_event, encode, encode_json
from wire.events import EVENT_TYPES, ContainerStopRequested

ids = st.sampled_from([cid(1), cid(2), "not-an-id", "ABCDEF0123456789", ""])
names = st.sampled_from(["n1", "node-2", "-bad", "UPPER", "a" * 64, ""])
_SPECIAL = {"container_id": ids, "service_id": ids, "replaces": ids, "node": names, "name": names}


def _edges(low: int | None, high: int | None) -> st.SearchStrategy[int]:
    picks = [0, 1, -1, 2**63 - 1, -(2**63)]
    for b in (low, high):
        if b is not None:
            picks += [b - 1, b, b + 1]
    lo = low if low is not None else -(2**40)
    hi = high if high is not None else 2**40
    return st.sampled_from(picks) | st.integers(lo, max(lo, hi))


def values(t: mi.Type, depth: int = 0) -> st.SearchStrategy[Any]:
    """Values of a msgspec type, in range and out of it."""
    if isinstance(t, mi.Metadata):
        return values(t.type, depth)
    if isinstance(t, mi.IntType):
        low = t.ge if t.ge is not None else (t.gt + 1 if t.gt is not None else None)
        high = t.le if t.le is not None else (t.lt - 1 if t.lt is not None else None)
        return _edges(low, high)
    if isinstance(t, mi.FloatType):
        bounds = [float(b) for b in (t.ge, t.le, t.gt, t.lt) if b is not None]
        return (
            st.sampled_from([*bounds, *(b + d for b in bounds for d in (-1e-9, 1e-9)), math.nan, math.inf, 1e308])
            | st.floats()
        )
    if isinstance(t, mi.StrType):
        n = t.max_length or 40
        return st.sampled_from(["", "a", "x" * n, "x" * (n + 1), "busybox", "ü-ß"]) | st.text(max_size=8)
    if isinstance(t, mi.BoolType):
        return st.booleans()
    if isinstance(t, mi.NoneType):
        return st.none()
    if isinstance(t, mi.EnumType):
        return st.sampled_from(list(t.cls))
    if isinstance(t, mi.LiteralType):
        return st.sampled_from(t.values)
    if isinstance(t, mi.UnionType):
        return st.one_of([values(u, depth) for u in t.types])
    if isinstance(t, mi.VarTupleType | mi.ListType):
        most = 0 if depth > 3 else 3
        return st.lists(values(t.item_type, depth + 1), max_size=most).map(tuple)
    if isinstance(t, mi.DictType):
        most = 0 if depth > 3 else 3
        return st.dictionaries(values(t.key_type, depth + 1), values(t.value_type, depth + 1), max_size=most)
    if isinstance(t, mi.StructType):
        return structs(t, depth + 1)
    raise NotImplementedError(f"no strategy for {t!r}")  # a new wire type: add it here


def structs(t: mi.StructType, depth: int = 0) -> st.SearchStrategy[Any]:
    fields = {
        f.name: (_SPECIAL[f.name] if f.name in _SPECIAL and depth <= 1 else values(f.type, depth)) for f in t.fields
    }

    def build(kw: dict[str, Any]) -> Any:
        try:
            return t.cls(**kw)
        except (ValueError, TypeError, msgspec.ValidationError):
            return None  # refused at construction: it never reaches the log

    return st.fixed_dictionaries(fields).map(build)


@pytest.mark.parametrize("type_name", sorted(EVENT_TYPES))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(data=st.data())
def test_the_reader_decodes_what_the_writer_accepts(type_name: str, data: st.DataObject) -> None:
    event = data.draw(structs(mi.type_info(EVENT_TYPES[type_name])))  # type: ignore[arg-type]
    if event is None:
        return
    try:
        payload = encode_checked(event)
    except InvalidAppend:
        with pytest.raises((msgspec.ValidationError, msgspec.DecodeError)):
            decode_event(encode(event))  # refused only what its reader would refuse
        return
    [replayed] = decode_batch(1, [payload])  # the replay's trusted batch decode
    assert encode(replayed) == payload
    assert encode(decode_event(payload)) == payload
    # and over HTTP: JSON out, JSON back in
    back = msgspec.json.decode(encode_json(event), type=type(event)) if _finite(event) else event
    assert encode(back) == payload


def _finite(value: Any) -> bool:
    """JSON has no NaN or infinity: msgspec writes them as null (nested ones too)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, msgspec.Struct):
        return all(_finite(v) for v in msgspec.structs.asdict(value).values())
    if isinstance(value, tuple | list):
        return all(_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    return True


@pytest.mark.parametrize("grace", [-1.0, math.nan, math.inf, 1e308, 3600.5])
def test_an_out_of_bounds_event_is_refused_before_it_is_written(grace: float) -> None:
    with pytest.raises(InvalidAppend, match="grace_s"):
        encode_checked(ContainerStopRequested(container_id=cid(1), grace_s=grace))
