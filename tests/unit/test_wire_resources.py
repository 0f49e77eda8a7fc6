"""wire.resources: CPU and memory quantities and the Resources struct."""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from wire.resources import (
    MAX_CPU_MILLIS,
    MAX_MEMORY_BYTES,
    MIN_MEMORY_BYTES,
    Resources,
    format_cpu,
    format_memory,
    parse_cpu,
    parse_memory,
)

KI, MI, GI, TI = 2**10, 2**20, 2**30, 2**40

# Strategies are spelled out: hypothesis does not read msgspec.Meta bounds.
cpu_millis = st.integers(min_value=0, max_value=MAX_CPU_MILLIS)
memory_bytes = st.integers(min_value=0, max_value=MAX_MEMORY_BYTES)
resources = st.builds(Resources, cpu_millis=cpu_millis, memory_bytes=memory_bytes)


# --- parse_cpu -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "millis"),
    [
        pytest.param("250m", 250, id="millicores"),
        pytest.param("2", 2000, id="whole-cpus"),
        pytest.param("1.5", 1500, id="fractional-cpus"),
        pytest.param(".5", 500, id="leading-dot"),
        pytest.param("1.", 1000, id="trailing-dot"),
        pytest.param("0.001", 1, id="one-millicore-as-cpus"),
        pytest.param("2.000", 2000, id="trailing-zeros"),
        pytest.param(1.5, 1500, id="float"),
        pytest.param(2, 2000, id="int"),
        pytest.param(0, 0, id="int-zero"),
        pytest.param("0", 0, id="zero"),
        pytest.param("0m", 0, id="zero-millicores"),
        pytest.param("1e3m", 1000, id="exponent-millicores"),
        pytest.param("1E3m", 1000, id="exponent-uppercase"),
        pytest.param("1e-3", 1, id="negative-exponent"),
        pytest.param("1e+1", 10_000, id="explicit-plus-exponent"),
        pytest.param(" 2 ", 2000, id="surrounding-spaces"),
        pytest.param("500 m", 500, id="space-before-unit"),
        pytest.param("1024", MAX_CPU_MILLIS, id="max-cpus"),
        pytest.param(f"{MAX_CPU_MILLIS}m", MAX_CPU_MILLIS, id="max-millicores"),
    ],
)
def test_parse_cpu_valid(value: str | int | float, millis: int) -> None:
    assert parse_cpu(value) == millis


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param("-1", "cpu: '-1' is not a quantity", id="negative-string"),
        pytest.param(-1, "cpu: '-1' is not a quantity", id="negative-int"),
        pytest.param(-0.5, "cpu: '-0.5' is not a quantity", id="negative-float"),
        pytest.param("abc", "cpu: 'abc' is not a quantity", id="letters"),
        pytest.param("", "cpu: '' is not a quantity", id="empty"),
        pytest.param("m", "cpu: 'm' is not a quantity", id="unit-only"),
        pytest.param("1.2.3", "cpu: '1.2.3' is not a quantity", id="two-dots"),
        pytest.param("+1", "cpu: '+1' is not a quantity", id="plus-sign"),
        pytest.param("0x10", "cpu: '0x10' is not a quantity", id="hex"),
        pytest.param(float("nan"), "cpu: 'nan' is not a quantity", id="nan"),
        pytest.param(float("inf"), "cpu: 'inf' is not a quantity", id="inf"),
        pytest.param("1.0005", "cpu: '1.0005' is finer than a millicore", id="finer-than-millicore"),
        pytest.param("0.5m", "cpu: '0.5m' is finer than a millicore", id="half-millicore"),
        pytest.param(0.0001, "cpu: 0.0001 is finer than a millicore", id="float-finer-than-millicore"),
        pytest.param("1k", "cpu: unknown unit 'k'", id="unit-k"),
        pytest.param("1Mi", "cpu: unknown unit 'Mi'", id="unit-Mi"),
        pytest.param("1M", "cpu: unknown unit 'M'", id="unit-M"),
        pytest.param("1e", "cpu: unknown unit 'e'", id="exponent-without-digits"),
        pytest.param("1025", "cpu: '1025' is outside 0..1024 CPUs", id="over-max-cpus"),
        pytest.param(f"{MAX_CPU_MILLIS + 1}m", "is outside 0..1024 CPUs", id="over-max-millicores"),
        pytest.param("1e30", "cpu: '1e30' is outside 0..1024 CPUs", id="huge"),
        pytest.param(True, "cpu: expected a quantity such as '500m' or '2'", id="bool-true"),
        pytest.param(False, "cpu: expected a quantity such as '500m' or '2'", id="bool-false"),
    ],
)
def test_parse_cpu_invalid(value: str | int | float, message: str) -> None:
    with pytest.raises(ValueError, match=r"^cpu: ") as info:
        parse_cpu(value)
    assert message in str(info.value)


@given(cpu_millis)
def test_parse_cpu_inverts_format_cpu(millis: int) -> None:
    assert parse_cpu(format_cpu(millis)) == millis


@given(cpu_millis)
def test_parse_cpu_of_millicore_string(millis: int) -> None:
    assert parse_cpu(f"{millis}m") == millis


@given(cpu_millis)
def test_parse_cpu_of_float_cpus(millis: int) -> None:
    # repr of millis / 1000 is the shortest decimal that round-trips, so at most three decimals.
    assert parse_cpu(millis / 1000) == millis


@given(st.integers(min_value=MAX_CPU_MILLIS + 1, max_value=10 * MAX_CPU_MILLIS))
def test_parse_cpu_rejects_everything_above_max(millis: int) -> None:
    with pytest.raises(ValueError, match=r"^cpu: .* is outside 0\.\.1024 CPUs"):
        parse_cpu(f"{millis}m")


@pytest.mark.parametrize(
    ("millis", "text"),
    [
        pytest.param(0, "0", id="zero"),
        pytest.param(1, "1m", id="one-millicore"),
        pytest.param(250, "250m", id="quarter"),
        pytest.param(1000, "1", id="one-cpu"),
        pytest.param(1500, "1500m", id="one-and-a-half"),
        pytest.param(MAX_CPU_MILLIS, "1024", id="max"),
    ],
)
def test_format_cpu(millis: int, text: str) -> None:
    assert format_cpu(millis) == text


# --- parse_memory --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "nbytes"),
    [
        pytest.param("512Mi", 512 * MI, id="Mi"),
        pytest.param("1G", 10**9, id="G"),
        pytest.param("1.5Gi", 3 * GI // 2, id="fractional-Gi"),
        pytest.param(4096, 4096, id="int-bytes"),
        pytest.param("4096", 4096, id="string-bytes"),
        pytest.param("0", 0, id="zero"),
        pytest.param(0, 0, id="int-zero"),
        pytest.param("1k", 1000, id="k"),
        pytest.param("1K", 1000, id="K"),
        pytest.param("1Ki", KI, id="Ki"),
        pytest.param("0.5Ki", 512, id="half-Ki"),
        pytest.param("2M", 2 * 10**6, id="M"),
        pytest.param("1T", 10**12, id="T"),
        pytest.param("1Ti", TI, id="Ti"),
        pytest.param("64Ti", MAX_MEMORY_BYTES, id="max"),
        pytest.param("1e3", 1000, id="exponent"),
        pytest.param("1e3Ki", 1000 * KI, id="exponent-with-unit"),
        pytest.param(" 4Mi ", MIN_MEMORY_BYTES, id="surrounding-spaces"),
    ],
)
def test_parse_memory_valid(value: str | int, nbytes: int) -> None:
    assert parse_memory(value) == nbytes


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param("-1", "memory: '-1' is not a quantity", id="negative-string"),
        pytest.param(-1, "memory: '-1' is not a quantity", id="negative-int"),
        pytest.param("abc", "memory: 'abc' is not a quantity", id="letters"),
        pytest.param("", "memory: '' is not a quantity", id="empty"),
        pytest.param("Mi", "memory: 'Mi' is not a quantity", id="unit-only"),
        pytest.param("1.5", "memory: '1.5' is not a whole number of bytes", id="fractional-bytes"),
        pytest.param("0.0001k", "memory: '0.0001k' is not a whole number of bytes", id="fraction-of-a-byte-in-k"),
        pytest.param("1e-1", "memory: '1e-1' is not a whole number of bytes", id="negative-exponent"),
        pytest.param("1m", "memory: unknown unit 'm'", id="millibytes"),
        pytest.param("1Ei", "memory: unknown unit 'Ei'", id="unit-Ei"),
        pytest.param("1KiB", "memory: unknown unit 'KiB'", id="unit-KiB"),
        pytest.param("1ki", "memory: unknown unit 'ki'", id="unit-lowercase-ki"),
        pytest.param("1P", "memory: '1P' is outside 0..64Ti", id="P-over-max"),
        pytest.param("1Pi", "memory: '1Pi' is outside 0..64Ti", id="Pi-over-max"),
        pytest.param("65Ti", "memory: '65Ti' is outside 0..64Ti", id="over-max"),
        pytest.param(MAX_MEMORY_BYTES + 1, "is outside 0..64Ti", id="one-byte-over-max"),
        pytest.param(True, "memory: expected a quantity such as '512Mi'", id="bool-true"),
        pytest.param(False, "memory: expected a quantity such as '512Mi'", id="bool-false"),
    ],
)
def test_parse_memory_invalid(value: str | int, message: str) -> None:
    with pytest.raises(ValueError, match=r"^memory: ") as info:
        parse_memory(value)
    assert message in str(info.value)


@given(memory_bytes)
def test_parse_memory_inverts_format_memory(nbytes: int) -> None:
    assert parse_memory(format_memory(nbytes)) == nbytes


@given(st.integers(min_value=0, max_value=MAX_MEMORY_BYTES // MI))
def test_parse_memory_of_mebibytes(n: int) -> None:
    assert parse_memory(f"{n}Mi") == n * MI


@pytest.mark.parametrize(
    ("nbytes", "text"),
    [
        pytest.param(0, "0", id="zero"),
        pytest.param(1, "1", id="one-byte"),
        pytest.param(1000, "1000", id="decimal-kilo-stays-bytes"),
        pytest.param(1023, "1023", id="just-below-Ki"),
        pytest.param(KI, "1Ki", id="Ki"),
        pytest.param(KI + 1, "1025", id="not-a-multiple-of-Ki"),
        pytest.param(1536, "1536", id="one-and-a-half-Ki"),
        pytest.param(3 * KI, "3Ki", id="three-Ki"),
        pytest.param(MI + KI, "1025Ki", id="Mi-plus-Ki"),
        pytest.param(512 * MI, "512Mi", id="Mi"),
        pytest.param(3 * GI // 2, "1536Mi", id="one-and-a-half-Gi"),
        pytest.param(GI, "1Gi", id="Gi"),
        pytest.param(1024 * GI, "1Ti", id="prefers-largest-unit"),
        pytest.param(MAX_MEMORY_BYTES, "64Ti", id="max"),
    ],
)
def test_format_memory(nbytes: int, text: str) -> None:
    assert format_memory(nbytes) == text


# --- extremes: exact arithmetic, clear errors ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parse", "value"),
    [
        pytest.param(parse_cpu, "1e999997", id="cpu"),
        pytest.param(parse_cpu, "1e1000000", id="cpu-beyond-Emax"),
        pytest.param(parse_memory, "1e999999Ki", id="memory"),
        pytest.param(parse_memory, "1e1000000", id="memory-beyond-Emax"),
    ],
)
def test_huge_exponent_is_a_value_error(parse: Callable[[str], int], value: str) -> None:
    with pytest.raises(ValueError, match="exponent beyond"):
        parse(value)


@pytest.mark.parametrize(
    ("parse", "value"),
    [
        pytest.param(parse_cpu, "1.0000000000000000000000000001", id="cpu-29-digits"),
        pytest.param(parse_cpu, "1e-2000000", id="cpu-underflow-to-zero"),
        pytest.param(parse_memory, "1.00000000000000000000000000001Ki", id="memory-30-digits"),
        pytest.param(parse_memory, "1e-2000000", id="memory-underflow-to-zero"),
    ],
)
def test_sub_unit_quantities_are_rejected_whatever_their_precision(parse: Callable[[str], int], value: str) -> None:
    with pytest.raises(ValueError, match=r"finer than a millicore|not a whole number of bytes|exponent beyond"):
        parse(value)


# --- Resources -----------------------------------------------------------------------------------------------


def test_resources_default_to_zero() -> None:
    assert Resources() == Resources(cpu_millis=0, memory_bytes=0)


@pytest.mark.parametrize(
    ("a", "b", "total", "difference"),
    [
        pytest.param(Resources(), Resources(), Resources(), Resources(), id="zeros"),
        pytest.param(Resources(1500, GI), Resources(500, GI), Resources(2000, 2 * GI), Resources(1000, 0), id="mixed"),
        pytest.param(Resources(0, MI), Resources(250, 0), Resources(250, MI), Resources(-250, MI), id="negative"),
    ],
)
def test_resources_arithmetic(a: Resources, b: Resources, total: Resources, difference: Resources) -> None:
    assert a + b == total
    assert a - b == difference


@pytest.mark.parametrize(
    ("need", "have", "fits"),
    [
        pytest.param(Resources(), Resources(), True, id="zero-in-zero"),
        pytest.param(Resources(1000, GI), Resources(1000, GI), True, id="exactly"),
        pytest.param(Resources(500, MI), Resources(1000, GI), True, id="smaller"),
        pytest.param(Resources(1001, MI), Resources(1000, GI), False, id="too-much-cpu"),
        pytest.param(Resources(500, GI + 1), Resources(1000, GI), False, id="too-much-memory"),
        pytest.param(Resources(2000, 2 * GI), Resources(1000, GI), False, id="too-much-of-both"),
    ],
)
def test_resources_fits_in(need: Resources, have: Resources, fits: bool) -> None:
    assert need.fits_in(have) is fits


@given(resources, resources)
def test_resources_add_then_subtract_is_identity(a: Resources, b: Resources) -> None:
    assert (a + b) - b == a
    assert a.fits_in(a + b)


@given(resources)
def test_resources_json_round_trip(r: Resources) -> None:
    assert msgspec.json.decode(msgspec.json.encode(r), type=Resources) == r


@pytest.mark.parametrize(
    ("body", "error"),
    [
        pytest.param(b'{"cpu_millis":-1}', "Expected `int` >= 0 - at `$.cpu_millis`", id="negative-cpu"),
        pytest.param(b'{"cpu_millis":1024001}', "Expected `int` <= 1024000 - at `$.cpu_millis`", id="cpu-over-max"),
        pytest.param(b'{"memory_bytes":-1}', "Expected `int` >= 0 - at `$.memory_bytes`", id="negative-memory"),
        pytest.param(b'{"memory_bytes":70368744177665}', "at `$.memory_bytes`", id="memory-over-max"),
        pytest.param(b'{"cpu_millis":"1"}', "Expected `int`, got `str` - at `$.cpu_millis`", id="cpu-as-string"),
        pytest.param(b'{"cpus":1}', "Object contains unknown field `cpus`", id="unknown-field"),
    ],
)
def test_resources_decode_rejects(body: bytes, error: str) -> None:
    with pytest.raises(msgspec.ValidationError) as info:
        msgspec.json.decode(body, type=Resources)
    assert error in str(info.value)
