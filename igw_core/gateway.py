"""The per-process decision context every exchange shares, built from settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from igw_core.config import Settings
from igw_core.providers import Provider
from igw_core.routing import ModelPolicy

if TYPE_CHECKING:
    from igw_core.router import Router


@dataclass(slots=True, init=False)
class Routing:
    """The process's routing aliases: ``router`` is ``None`` with routing off, and is
    replaced whole when the routing file is reloaded."""

    router: Router | None = None

    def __init__(self, router: Router | None = None) -> None:
        self.router = router


@dataclass(frozen=True, slots=True)
class Gateway:
    """Context for exchanges: settings, providers by id, model policy, routing aliases.

    Immutable but for ``routing``, whose router holds the per-process routing state.

    Build it once per process with :meth:`from_settings`.
    """

    settings: Settings
    providers: dict[str, Provider]
    policy: ModelPolicy
    secrets: tuple[str, ...] = field(default=())
    routing: Routing = field(default_factory=Routing)
    #: ``settings.is_development``, read on every request, held as a plain field.
    development: bool = False

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
            development=settings.is_development,
        )
