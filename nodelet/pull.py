"""Pulling images from registries that speak the OCI distribution spec, with skopeo.

Why skopeo (Debian's package, from containers/image, the library Podman and CRI-O pull with): it already does
what a pull must get right — manifest lists and OCI indexes with this node's platform chosen, gzip and zstd
layers, every blob verified against its digest, anonymous and Bearer-token auth, basic auth from an auth file,
mirrors (registries.conf) — and it writes the OCI image layout this node already imports and checks
(``ImageStore.import_tar``). Writing the protocol by hand would redo all that, less well.

A pull copies into a private temporary archive, imports it, and removes it: a failed or tampered pull leaves
nothing in the store. Pulls of one reference share one run.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from nodelet.images import ImageRecord, ImageStore
from wire.files import private_dir, write_private

DEFAULT_REGISTRY = "docker.io"
_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")


class Reference(NamedTuple):
    """An image reference as Docker reads one: ``busybox`` is ``docker.io/library/busybox:latest``."""

    registry: str
    repository: str
    tag: str | None
    digest: str | None

    def __str__(self) -> str:
        name = f"{self.registry}/{self.repository}"
        return name + (f"@{self.digest}" if self.digest else f":{self.tag or 'latest'}")


class PullFailed(Exception):
    pass


def parse_reference(ref: str) -> Reference:
    """Split ``ref``: the first component is a registry when it has a ``.`` or ``:`` or is ``localhost``."""
    name, _, digest = ref.partition("@")
    if digest and not _DIGEST.fullmatch(digest):
        raise ValueError(f"{ref!r}: a digest is sha256:<64 hex digits>")
    tag = None
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = name.rsplit(":", 1)
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, repository = first, rest
    else:
        registry, repository = DEFAULT_REGISTRY, name
    if registry == DEFAULT_REGISTRY and "/" not in repository:
        repository = f"library/{repository}"
    return Reference(registry, repository, tag, digest or None)


def plain_http(registry: str, insecure: Sequence[str]) -> bool:
    """Whether ``registry`` is reached over plain HTTP: those named ``insecure``, and loopback ones, as Docker
    treats 127.0.0.0/8 (and ``localhost``)."""
    if registry in insecure:
        return True
    if registry.startswith("["):  # [v6]:port
        host = registry[1 : registry.find("]")]
    else:
        host = registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry
    if host == "localhost":
        return True
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host).is_loopback
    return False


def _registry_options(ref: Reference, insecure: Sequence[str], authfile: str | None, prefix: str) -> list[str]:
    """How skopeo reaches ``ref``'s registry: plain HTTP or not, and with which credentials (its options for
    a source take ``prefix`` "src-")."""
    options = [f"--{prefix}tls-verify=false"] if plain_http(ref.registry, insecure) else []
    return options + ([f"--{prefix}authfile", authfile] if authfile is not None else [])


def skopeo_args(ref: Reference, archive: Path, *, insecure: Sequence[str], authfile: str | None) -> list[str]:
    """The ``skopeo copy`` of ``ref`` into an OCI archive (``archive``), its name the reference itself."""
    options = _registry_options(ref, insecure, authfile, "src-")
    return ["copy", "--quiet", "--retry-times", "2", *options, f"docker://{ref}", f"oci-archive:{archive}"]


def inspect_args(ref: Reference, *, insecure: Sequence[str], authfile: str | None) -> list[str]:
    """The ``skopeo inspect`` that prints the config ``ref`` names now (its digest is the image id)."""
    options = _registry_options(ref, insecure, authfile, "")
    return ["inspect", "--config", "--raw", "--retry-times", "2", *options, f"docker://{ref}"]


def reason(stderr: str) -> str:
    """skopeo's error, in the words a user can act on (``manifest unknown``, ``unauthorized``...)."""
    text = " ".join(stderr.split())
    for known in ("manifest unknown", "unauthorized", "denied", "name unknown", "no such host", "connection refused",
                  "digest", "no image found in manifest list"):  # fmt: skip
        if known in text.lower():
            return known if known != "digest" else "digest mismatch"
    return text[-300:] or "skopeo failed"


def registries_conf(mirrors: Mapping[str, str], insecure: Sequence[str]) -> str:
    """containers-registries.conf(5) that sends pulls from each registry to its mirror first (the registry
    itself is tried after it)."""
    out = []
    for registry, mirror in sorted(mirrors.items()):
        out += ["[[registry]]", f"location = {json.dumps(registry)}", "", "[[registry.mirror]]"]
        out += [f"location = {json.dumps(mirror)}", f"insecure = {str(plain_http(mirror, insecure)).lower()}", ""]
    return "\n".join(out)


class Puller:
    """Pulls into ``store`` (one run per reference at a time)."""

    def __init__(
        self,
        store: ImageStore,
        tmp: Path,
        *,
        insecure: Sequence[str] = (),
        authfile: str | None = None,
        mirrors: Mapping[str, str] | None = None,
        skopeo: str = "skopeo",
        timeout_s: float = 1800.0,
    ) -> None:
        self.store, self.tmp = store, tmp
        self.insecure, self.authfile, self.skopeo, self.timeout_s = tuple(insecure), authfile, skopeo, timeout_s
        self._running: dict[str, asyncio.Future[ImageRecord]] = {}
        self._global: list[str] = []  # skopeo's options before its command
        # skopeo stages layers in TMPDIR: this node's pull directory, on its disk, not /var/tmp.
        self._env = {**os.environ, "TMPDIR": str(private_dir(tmp))}
        for leftover in tmp.glob("pull-*.tar"):  # a pull cut short by a crash
            leftover.unlink(missing_ok=True)
        if mirrors:  # skopeo reads the mirrors from a registries.conf of this puller's own
            conf = tmp / "registries.conf"
            write_private(conf, registries_conf(mirrors, insecure).encode())
            self._global = ["--registries-conf", str(conf)]

    async def pull(self, ref: str, *, always: bool = False) -> ImageRecord:
        """Pull ``ref`` (a pull of it already under way is awaited, not repeated). PullFailed says why.
        Held already, it is pulled only with ``always`` (Kubernetes' Always), and then only if the registry's
        config for it is not the one held."""
        parsed = parse_reference(ref)
        key = f"{parsed}{' always' if always else ''}"
        running = self._running.get(key)
        if running is None:
            running = asyncio.ensure_future(self._pull(parsed, ref, always))
            self._running[key] = running
            running.add_done_callback(lambda _: self._running.pop(key, None))
        return await asyncio.shield(running)

    async def _skopeo(self, args: list[str], asked: str) -> bytes:
        """Run skopeo; its output, or PullFailed with its reason."""
        proc = await asyncio.create_subprocess_exec(
            self.skopeo,
            *self._global,
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self._env,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), self.timeout_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise PullFailed(f"{asked}: not done in {self.timeout_s:.0f} s") from None
        except asyncio.CancelledError:  # the nodelet stops: no skopeo left behind
            proc.kill()
            await asyncio.shield(proc.wait())
            raise
        if proc.returncode != 0:
            raise PullFailed(f"{asked}: {reason(err.decode(errors='replace'))}")
        return out

    async def _pull(self, ref: Reference, asked: str, always: bool) -> ImageRecord:
        held = await asyncio.to_thread(self.store.image_id, asked)
        if held is not None:
            if not always:
                return await asyncio.to_thread(self.store.record, held)
            config = await self._skopeo(inspect_args(ref, insecure=self.insecure, authfile=self.authfile), asked)
            if f"sha256:{hashlib.sha256(config).hexdigest()}" == held:
                return await asyncio.to_thread(self.store.record, held)  # the name still points at it
        self.tmp.mkdir(mode=0o700, parents=True, exist_ok=True)
        archive = self.tmp / f"pull-{os.getpid()}-{id(ref):x}.tar"
        try:
            await self._skopeo(skopeo_args(ref, archive, insecure=self.insecure, authfile=self.authfile), asked)
            return await asyncio.to_thread(self.store.import_tar, archive, (asked,))  # named as it lands
        finally:
            archive.unlink(missing_ok=True)
