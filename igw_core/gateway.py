"""The per-process decision context every exchange shares, built from settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from igw_core.config import Settings
from igw_core.providers import Provider
from igw_core.routing import ModelPolicy


@dataclass(frozen=True, slots=True)
class Gateway:
    """Immutable context for exchanges: settings, providers by id, model policy.

    Build it once per process with :meth:`from_settings`.
    """

    settings: Settings
    providers: dict[str, Provider]
    policy: ModelPolicy
    secrets: tuple[str, ...] = field(default=())

    @classmethod
    def from_settings(cls, settings: Settings) -> Gateway:
        """Return the context for ``settings``."""
        providers = {p.id: p for p in settings.providers}
        secrets = tuple(
            s
            for s in (*(p.api_key for p in settings.providers), settings.auth_oidc_client_secret)
            if s
        )
        return cls(
            settings,
            providers,
            ModelPolicy.from_lists(settings.allowed_models, settings.disallowed_models),
            secrets,
        )
