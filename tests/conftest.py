"""Test-wide settings. Hypothesis runs without per-example deadlines: this machine is shared and noisy, and
tests check correctness, not time."""

from hypothesis import HealthCheck, settings

settings.register_profile("corral", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("corral")
