"""Test-wide settings. Hypothesis runs without per-example deadlines: this machine is shared and noisy, and
tests check correctness, not time.

No test reaches a registry beyond this machine: HTTP(S) goes through a proxy on a closed loopback port (a pull
of ``busybox`` from Docker Hub fails at once, with nothing sent and no name looked up), while loopback
addresses, where the tests' registries and control planes listen, are reached directly."""

import os

from hypothesis import HealthCheck, settings

settings.register_profile("corral", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("corral")

for _name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
    os.environ[_name] = "http://127.0.0.1:9"
for _name in ("NO_PROXY", "no_proxy"):
    os.environ[_name] = "127.0.0.1,localhost,::1"
