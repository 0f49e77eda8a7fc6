"""Resource quantities: CPU in millicores, memory in bytes.

``parse_cpu`` and ``parse_memory`` accept Kubernetes quantity strings ("500m", "1.5", "512Mi", "2G") and
return integers; they raise ``ValueError`` with a message fit for a user.
"""

from __future__ import annotations

import re
from decimal import Context, Decimal, DecimalException, Inexact, InvalidOperation, Overflow
from typing import Annotated

import msgspec

MAX_CPU_MILLIS = 1024 * 1000  # 1024 CPUs
MIN_MEMORY_BYTES = 4 * 1024 * 1024  # runc cannot start a container below a few MiB
MAX_MEMORY_BYTES = 64 * 1024**4  # 64 TiB

CpuMillis = Annotated[int, msgspec.Meta(ge=0, le=MAX_CPU_MILLIS, description="CPU in millicores")]
MemoryBytes = Annotated[int, msgspec.Meta(ge=0, le=MAX_MEMORY_BYTES, description="memory in bytes")]


class Resources(msgspec.Struct, frozen=True, gc=False, forbid_unknown_fields=True):
    """An amount of CPU and memory: a capacity, a request or an allocation."""

    cpu_millis: CpuMillis = 0
    memory_bytes: MemoryBytes = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cpu_millis + other.cpu_millis, self.memory_bytes + other.memory_bytes)

    def __sub__(self, other: Resources) -> Resources:
        return Resources(self.cpu_millis - other.cpu_millis, self.memory_bytes - other.memory_bytes)

    def fits_in(self, other: Resources) -> bool:
        return self.cpu_millis <= other.cpu_millis and self.memory_bytes <= other.memory_bytes


_QUANTITY = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE]([+-]?[0-9]+))?\s*([a-zA-Z]*)\s*$")
_MEMORY_SUFFIX = {
    "": 1,
    "k": 10**3,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
}


_MAX_QUANTITY_CHARS = 64
_MAX_EXPONENT = 30
# Inputs are at most 64 characters with exponents within ±30: 200 digits hold every product exactly.
_EXACT = Context(prec=200, traps=[Inexact, InvalidOperation, Overflow])


def _number(text: str, what: str) -> tuple[Decimal, str]:
    m = _QUANTITY.match(text) if len(text) <= _MAX_QUANTITY_CHARS else None
    if m is None:
        raise ValueError(f"{what}: {text!r} is not a quantity")
    exponent = int(m.group(2) or 0)
    if abs(exponent) > _MAX_EXPONENT:
        raise ValueError(f"{what}: {text!r} has an exponent beyond ±{_MAX_EXPONENT}")
    try:
        value = _EXACT.multiply(Decimal(m.group(1)), _EXACT.power(Decimal(10), exponent))
    except DecimalException:
        raise ValueError(f"{what}: {text!r} is not a quantity") from None
    return value, m.group(3)


def parse_cpu(value: str | int | float) -> int:
    """CPU quantity → millicores: "250m" → 250, "2" → 2000, 1.5 → 1500."""
    if isinstance(value, bool):
        raise ValueError("cpu: expected a quantity such as '500m' or '2'")
    number, suffix = _number(str(value), "cpu")
    if suffix == "m":
        millis = number
    elif suffix == "":
        millis = _EXACT.multiply(number, Decimal(1000))
    else:
        raise ValueError(f"cpu: unknown unit {suffix!r} (use 'm' for millicores or none for CPUs)")
    if millis != millis.to_integral_value():
        raise ValueError(f"cpu: {value!r} is finer than a millicore")
    result = int(millis)
    if not 0 <= result <= MAX_CPU_MILLIS:
        raise ValueError(f"cpu: {value!r} is outside 0..{MAX_CPU_MILLIS // 1000} CPUs")
    return result


def parse_memory(value: str | int) -> int:
    """Memory quantity → bytes: "512Mi" → 536870912, "1G" → 10**9, 4096 → 4096."""
    if isinstance(value, bool):
        raise ValueError("memory: expected a quantity such as '512Mi'")
    number, suffix = _number(str(value), "memory")
    if suffix not in _MEMORY_SUFFIX:
        raise ValueError(f"memory: unknown unit {suffix!r} (use Ki, Mi, Gi, Ti or k, M, G, T)")
    amount = _EXACT.multiply(number, Decimal(_MEMORY_SUFFIX[suffix]))
    if amount != amount.to_integral_value():
        raise ValueError(f"memory: {value!r} is not a whole number of bytes")
    result = int(amount)
    if not 0 <= result <= MAX_MEMORY_BYTES:
        raise ValueError(f"memory: {value!r} is outside 0..64Ti")
    return result


def format_cpu(millis: int) -> str:
    return f"{millis // 1000}" if millis % 1000 == 0 else f"{millis}m"


def format_memory(n: int) -> str:
    for suffix in ("Ti", "Gi", "Mi", "Ki"):
        unit = _MEMORY_SUFFIX[suffix]
        if n >= unit and n % unit == 0:
            return f"{n // unit}{suffix}"
    return str(n)
