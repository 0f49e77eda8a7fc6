from __future__ import annotations

from typing import Any

import pytest

from nodelet.images import ImageConfig
from nodelet.ocispec import CAPABILITIES, MountNotAllowed, NoCommand, oci_config
from nodelet.seccomp import RUNTIME_DEFAULT
from tests.builders import spec
from wire.spec import ContainerSpec, Mount


def config(s: ContainerSpec, **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "container_id": "0123456789abcdef",
        "rootfs": "/var/lib/corral/c/0123456789abcdef/rootfs",
        "cgroups_path": "/corral/n1/0123456789abcdef",
        "cpus": None,
        "mems": None,
        "cpu_shares": 1024,
        "cpu_quota_us": None,
    }
    return oci_config(s, **{**args, **kw})


def test_secure_defaults() -> None:
    c = config(spec("web", command=("httpd", "-f")))
    p = c["process"]
    assert p["noNewPrivileges"] is True
    assert p["terminal"] is False
    assert p["args"] == ["httpd", "-f"]
    for kind in ("bounding", "effective", "permitted"):
        assert p["capabilities"][kind] == list(CAPABILITIES)
    assert "ambient" not in p["capabilities"]
    assert not {"CAP_SYS_ADMIN", "CAP_NET_RAW", "CAP_MKNOD", "CAP_SYS_PTRACE"} & set(CAPABILITIES)
    linux = c["linux"]
    assert {n["type"] for n in linux["namespaces"]} == {"pid", "network", "ipc", "uts", "mount", "cgroup"}
    assert p["user"] == {"uid": 0, "gid": 0, "additionalGids": []}
    assert all("path" not in n for n in linux["namespaces"]), "never join a host namespace"
    assert "/proc/kcore" in linux["maskedPaths"]
    assert "/proc/sys" in linux["readonlyPaths"]
    assert linux["resources"]["pids"] == {"limit": 1024}
    assert linux["resources"]["devices"] == [{"allow": False, "access": "rwm"}]
    assert linux["cgroupsPath"] == "/corral/n1/0123456789abcdef"
    assert linux["seccomp"] == RUNTIME_DEFAULT
    assert not [m for m in c["mounts"] if m["type"] == "bind"]
    assert c["root"] == {"path": "/var/lib/corral/c/0123456789abcdef/rootfs", "readonly": False}


def test_unconfined_has_no_filter() -> None:
    assert "seccomp" not in config(spec(), seccomp=None)["linux"]


@pytest.mark.parametrize(
    ("kw", "cpu"),
    [
        pytest.param({}, {"shares": 1024, "period": 100_000}, id="no-limit"),
        pytest.param({"cpu_quota_us": 50_000, "cpu_shares": 512}, {"shares": 512, "period": 100_000, "quota": 50_000}),
        pytest.param(
            {"cpus": "2-3", "mems": "0", "cpu_shares": 2048},
            {"shares": 2048, "period": 100_000, "cpus": "2-3", "mems": "0"},
            id="exclusive",
        ),
    ],
)
def test_cpu_resources(kw: dict[str, Any], cpu: dict[str, Any]) -> None:
    assert config(spec(), **kw)["linux"]["resources"]["cpu"] == cpu


def test_memory_limit_and_no_swap_beyond_it() -> None:
    c = config(spec(memory_limit_bytes=64 << 20))
    assert c["linux"]["resources"]["memory"] == {"limit": 64 << 20, "swap": 64 << 20}
    assert "memory" not in config(spec())["linux"]["resources"]


def test_read_only_root_is_an_option() -> None:
    assert config(spec(read_only_root=True))["root"]["readonly"] is True


def test_env_and_hostname() -> None:
    c = config(spec("api", env={"A": "1", "PATH": "/bin"}))
    assert c["hostname"] == "api"
    assert c["process"]["env"] == ["PATH=/bin", "HOSTNAME=api", "A=1"]


@pytest.mark.parametrize(
    ("source", "allowed", "ok"),
    [
        ("/srv/data", (), False),
        ("/srv/data", ("/srv",), True),
        ("/srv", ("/srv",), True),
        ("/srvx/data", ("/srv",), False),
        ("/etc/shadow", ("/srv", "/var/lib/corral/volumes"), False),
        ("/var/lib/corral/volumes/a", ("/srv", "/var/lib/corral/volumes"), True),
    ],
)
def test_host_mounts_need_the_nodes_allow_list(source: str, allowed: tuple[str, ...], ok: bool) -> None:
    s = spec(mounts=(Mount(source=source, destination="/data"),))
    if ok:
        binds = [m for m in config(s, allowed_host_mounts=allowed)["mounts"] if m["type"] == "bind"]
        assert binds == [
            {
                "destination": "/data",
                "type": "bind",
                "source": source,
                "options": ["rbind", "nosuid", "nodev", "ro", "rro"],
            }
        ]
    else:
        with pytest.raises(MountNotAllowed, match="is not allowed on this node"):
            config(s, allowed_host_mounts=allowed)


@pytest.mark.parametrize("path", ["relative/path", "/a/../etc", "/a/.."])
def test_mount_paths_must_be_absolute_without_dotdot(path: str) -> None:
    with pytest.raises(ValueError, match="absolute path without"):
        Mount(source=path, destination="/data")


APP = ImageConfig(
    entrypoint=("/bin/app",), cmd=("--port", "80"), env=("PATH=/opt/bin", "LANG=C"), working_dir="/srv", user="7"
)


@pytest.mark.parametrize(
    ("kw", "image", "args"),
    [
        ({}, APP, ["/bin/app", "--port", "80"]),  # docker run app
        ({"command": ("--port", "90")}, APP, ["/bin/app", "--port", "90"]),  # docker run app --port 90
        ({"entrypoint": ("/bin/sh",)}, APP, ["/bin/sh"]),  # --entrypoint drops the image's Cmd
        ({"entrypoint": ("/bin/sh",), "command": ("-c", "id")}, APP, ["/bin/sh", "-c", "id"]),
        ({"entrypoint": (), "command": ("true",)}, APP, ["true"]),  # --entrypoint ""
        ({}, ImageConfig(cmd=("sh",)), ["sh"]),  # the built-in busybox
        ({"command": ("echo", "hi")}, ImageConfig(), ["echo", "hi"]),
    ],
)
def test_args_as_docker_run_makes_them(kw: dict[str, Any], image: ImageConfig, args: list[str]) -> None:
    assert config(spec("a", **kw), image=image)["process"]["args"] == args


def test_an_image_and_a_spec_that_say_nothing_to_run_are_refused() -> None:
    with pytest.raises(NoCommand):
        config(spec("a"), image=ImageConfig(env=("A=1",)))
    with pytest.raises(NoCommand):
        config(spec("a", entrypoint=()), image=APP)


def test_env_and_working_dir_from_the_image_under_the_spec() -> None:
    c = config(spec("api", env={"LANG": "en_US.UTF-8", "B": "2"}), image=APP)
    assert c["process"]["env"] == ["PATH=/opt/bin", "HOSTNAME=api", "LANG=en_US.UTF-8", "B=2"]
    assert c["process"]["cwd"] == "/srv"
    assert config(spec("api", working_dir="/tmp"), image=APP)["process"]["cwd"] == "/tmp"
    assert config(spec("api"), image=ImageConfig(cmd=("x",), working_dir="app"))["process"]["cwd"] == "/app"
    assert config(spec("api"))["process"]["cwd"] == "/"
    odd = ImageConfig(cmd=("x",), env=("NOEQUALS", "=nokey", "E="))
    assert config(spec("api"), image=odd)["process"]["env"][2:] == ["E="]


@pytest.mark.parametrize("path", ["relative", "/a/../b", "/a/.."])
def test_working_dir_must_be_absolute_without_dotdot(path: str) -> None:
    with pytest.raises(ValueError, match="working_dir"):
        spec("a", working_dir=path)
