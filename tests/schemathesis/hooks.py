"""Schemathesis hooks. JSON Schema counts 500.0 as an integer; Corral's decoder is strict and refuses it (an
integer is written without a fraction), so a generated integral float is sent as the integer it stands for."""

from __future__ import annotations

from typing import Any

import schemathesis


def _integers(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _integers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integers(v) for v in value]
    return value


@schemathesis.hook
def map_body(context: Any, body: Any) -> Any:
    return _integers(body)
