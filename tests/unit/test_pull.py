"""Image references as Docker reads them, plain HTTP where Docker allows it, and skopeo's arguments."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodelet.pull import Reference, inspect_args, parse_reference, plain_http, reason, registries_conf, skopeo_args

D = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("ref", "want"),
    [
        ("busybox", Reference("docker.io", "library/busybox", None, None)),
        ("busybox:1.36", Reference("docker.io", "library/busybox", "1.36", None)),
        ("team/app", Reference("docker.io", "team/app", None, None)),
        ("ghcr.io/org/app:v1", Reference("ghcr.io", "org/app", "v1", None)),
        ("127.0.0.1:5000/demo:1", Reference("127.0.0.1:5000", "demo", "1", None)),
        ("localhost/demo", Reference("localhost", "demo", None, None)),
        (f"quay.io/a/b@{D}", Reference("quay.io", "a/b", None, D)),
        (f"registry:5000/a:tag@{D}", Reference("registry:5000", "a", "tag", D)),
    ],
)
def test_parse_reference(ref: str, want: Reference) -> None:
    assert parse_reference(ref) == want


def test_str_is_what_skopeo_takes() -> None:
    assert str(parse_reference("busybox")) == "docker.io/library/busybox:latest"
    assert str(parse_reference(f"quay.io/a/b:x@{D}")) == f"quay.io/a/b@{D}"  # the digest decides


def test_a_bad_digest_is_refused() -> None:
    with pytest.raises(ValueError, match="sha256"):
        parse_reference("app@sha256:abc")


@pytest.mark.parametrize(
    ("registry", "insecure", "want"),
    [
        ("127.0.0.1:5000", (), True),
        ("127.9.9.9:80", (), True),
        ("localhost:5000", (), True),
        ("[::1]:5000", (), True),
        ("10.0.0.5:5000", (), False),
        ("10.0.0.5:5000", ("10.0.0.5:5000",), True),
        ("docker.io", (), False),
    ],
)
def test_plain_http_as_docker(registry: str, insecure: tuple[str, ...], want: bool) -> None:
    assert plain_http(registry, insecure) is want


def test_skopeo_args() -> None:
    args = skopeo_args(parse_reference("127.0.0.1:5000/demo:1"), Path("/t/x.tar"), insecure=(), authfile="/a.json")
    assert args == [
        "copy", "--quiet", "--retry-times", "2", "--src-tls-verify=false", "--src-authfile", "/a.json",
        "docker://127.0.0.1:5000/demo:1", "oci-archive:/t/x.tar",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("stderr", "want"),
    [
        ('level=fatal msg="...: reading manifest 2 in 127.0.0.1:5000/demo: manifest unknown"', "manifest unknown"),
        ("... unauthorized: authentication required", "unauthorized"),
        ("... Digest did not match, expected sha256:..., got sha256:...", "digest mismatch"),
        ("something else entirely", "something else entirely"),
    ],
)  # fmt: skip
def test_reason(stderr: str, want: str) -> None:
    assert reason(stderr) == want


def test_inspect_args_ask_for_the_config_as_the_registry_holds_it() -> None:
    ref = parse_reference("127.0.0.1:5000/app:1")
    assert inspect_args(ref, insecure=(), authfile="/a.json") == [
        "inspect", "--config", "--raw", "--retry-times", "2", "--tls-verify=false", "--authfile", "/a.json",
        "docker://127.0.0.1:5000/app:1",
    ]  # fmt: skip
    assert "--tls-verify=false" not in inspect_args(parse_reference("ghcr.io/a/b:1"), insecure=(), authfile=None)


def test_registries_conf_sends_a_registry_to_its_mirror() -> None:
    conf = registries_conf({"docker.io": "mirror.internal:5000", "ghcr.io": "127.0.0.1:5001"}, ())
    assert conf == "\n".join([
        "[[registry]]", 'location = "docker.io"', "", "[[registry.mirror]]", 'location = "mirror.internal:5000"',
        "insecure = false", "",
        "[[registry]]", 'location = "ghcr.io"', "", "[[registry.mirror]]", 'location = "127.0.0.1:5001"',
        "insecure = true", "",
    ])  # fmt: skip
    assert "insecure = true" in registries_conf({"docker.io": "m:5000"}, ("m:5000",))
