"""Model routing and model policy: which provider serves a model, and may it.

``provider/model`` ids are split at the first ``/`` with a case-insensitive
provider prefix; ``?provider=ID`` names the provider explicitly instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mypy_extensions import mypyc_attr

from igw_core.errors import BadRequest, Forbidden
from igw_core.providers import Provider


@mypyc_attr(free_list_len=1, acyclic=True)
@dataclass(slots=True, init=False)
class Route:
    """Where a chat request goes (read-only by convention: built per request, and a frozen
    dataclass costs several times as much to build).

    Fields:
        provider: the configured provider that serves it.
        model: the model name as the provider knows it (prefix stripped).
    """

    provider: Provider
    model: str

    def __init__(self, provider: Provider, model: str) -> None:
        self.provider = provider
        self.model = model

    @property
    def full_id(self) -> str:
        """The ``provider/model`` id the client sees in ``/v1/models``."""
        return f"{self.provider.id}/{self.model}"


def lookup_provider(providers: dict[str, Provider], name: str) -> Provider:
    """Return the provider called ``name`` (case-insensitive), usable for requests.

    Raises:
        BadRequest: the provider is unknown, or has no API key configured.
    """
    provider = providers.get(name.lower())
    if provider is None:
        known = ", ".join(sorted(providers))
        raise BadRequest(
            f"unknown provider '{name}' (known providers: {known})", code="unknown_provider"
        )
    if not provider.usable:
        raise BadRequest(
            f"provider '{provider.id}' has no API key configured "
            f"(set {provider.id.upper()}_API_KEY)",
            code="provider_not_configured",
        )
    return provider


def route_model(
    providers: dict[str, Provider], model: str, provider_param: str | None
) -> Route:
    """Decide the provider and upstream model name for a chat request.

    With ``provider_param`` the model is forwarded as given, except that a
    prefix naming that same provider is stripped. Without it the model must be
    ``provider/model``.

    Raises:
        BadRequest: the model is empty, has no provider, or the provider is
            unknown or lacks a key.
    """
    if not model:
        raise BadRequest("'model' is required", code="missing_model")
    prefix, slash, rest = model.partition("/")
    if provider_param:
        provider = lookup_provider(providers, provider_param)
        if slash and rest and prefix.lower() == provider.id:
            return Route(provider, rest)
        return Route(provider, model)
    if not slash or not rest:
        raise BadRequest(
            f"model '{model}' does not name a provider: use 'provider/model' "
            "(e.g. 'openai/gpt-4o') or pass ?provider=ID",
            code="missing_provider",
        )
    return Route(lookup_provider(providers, prefix), rest)


@dataclass(frozen=True, slots=True)
class ModelPolicy:
    """``ALLOWED_MODELS`` / ``DISALLOWED_MODELS`` as a decision.

    Entries match a model's full ``provider/model`` id or its bare name,
    case-insensitively. A non-empty allow list admits only what it names; the
    deny list refuses what it names unless the allow list names it too.
    """

    allowed: frozenset[str]
    denied: frozenset[str]

    @classmethod
    def from_lists(cls, allowed: Iterable[str], denied: Iterable[str]) -> ModelPolicy:
        """Build a policy from the configured lists."""
        return cls(
            frozenset(m.strip().lower() for m in allowed if m.strip()),
            frozenset(m.strip().lower() for m in denied if m.strip()),
        )

    def permits(self, provider_id: str, model: str) -> bool:
        """Return whether ``provider_id``/``model`` may be used."""
        if not self.allowed and not self.denied:
            return True
        bare = model.lower()
        full = f"{provider_id}/{bare}"
        if self.allowed:
            return bare in self.allowed or full in self.allowed
        return bare not in self.denied and full not in self.denied

    def check_alias(self, alias: str) -> None:
        """Raise unless the routing alias ``alias`` is permitted (the lists match its name).

        Raises:
            Forbidden: the model policy refuses the alias.
        """
        if not self.permits("", alias):  # no provider: only the bare name can match
            raise Forbidden(f"model '{alias}' is not allowed on this gateway",
                            code="model_not_allowed")

    def check(self, route: Route) -> None:
        """Raise unless ``route`` is permitted.

        Raises:
            Forbidden: the model is not allowed by the gateway's model policy.
        """
        if not self.permits(route.provider.id, route.model):
            raise Forbidden(
                f"model '{route.full_id}' is not allowed on this gateway",
                code="model_not_allowed",
            )
