"""Scripted providers for the playground's tests, injected through the playground's factory:

    CONDUCTOR_PLAYGROUND_FACTORY="tests.playground_fakes:build_conductor"

`build_conductor()` builds a Conductor whose only usable providers are `ScriptedProvider`
fakes (the built-ins stay "not configured", with their real hints), logging to the
directory in CONDUCTOR_DATA_DIR. Tests reach the fakes through `FAKES` to script failures.
"""

from __future__ import annotations

from conductor_core.config import load_settings
from conductor_core.router import Conductor
from conductor_core.testing.fakes import ScriptedProvider

__all__ = ["FAKES", "CONDUCTORS", "build_conductor"]

FAKES: dict[str, ScriptedProvider] = {}
CONDUCTORS: list[Conductor] = []


def build_conductor() -> Conductor:
    FAKES.clear()
    FAKES.update(
        alpha=ScriptedProvider(
            "alpha",
            reply="Alpha answers first.",
            latency_s=0.01,
            models=["alpha-small", "alpha-large"],
            cost_per_token=1e-6,
        ),
        beta=ScriptedProvider(
            "beta", reply="Beta answers too.", latency_s=0.03, models=["beta-1"], cost_per_token=None
        ),
        gamma=ScriptedProvider("gamma", reply="Gamma is free.", latency_s=0.02, models=["gamma-1"], cost_per_token=0.0),
    )
    # Retries off and no back-off: a scripted failure is seen at once.
    settings = load_settings(_env_file=None, local_enabled=False, max_retries=0)
    conductor = Conductor(settings, extra_providers=list(FAKES.values()))
    CONDUCTORS.append(conductor)
    return conductor
