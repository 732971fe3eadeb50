"""The model list: every configured provider's list fetched at once, merged and filtered.

``GET /v1/models`` asks every configured provider (or the one ``?provider=`` names);
``GET /v1/models/{provider}/{model}`` looks one model up in its provider's list. One
failing provider does not fail the merged list; it does fail a single-provider answer.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

from igw_core.effects import CallProvider, Effect
from igw_core.errors import LocalProtocolError, NotFound
from igw_core.events import Event, ProviderFailed, ProviderResponse
from igw_core.flows.base import Flow, Table, TableState, by_state, provider_failure
from igw_core.models import filter_models, parse_model_list
from igw_core.redact import scrub
from igw_core.responses import json_bytes, json_response, upstream_error_body

if TYPE_CHECKING:
    from igw_core.exchange import Exchange
    from igw_core.providers import Provider

log: Final = logging.getLogger("igw.exchange")


class Step(TableState):
    """Where a model-list fan-out is."""

    COLLECTING = "collecting"  # buffered CallProviders outstanding
    DONE = "done"


class LastResult:
    """Table key: the provider result that completes the set."""


class ModelsFlow(Flow):
    """Fetches model lists from ``providers`` in parallel and answers with the merge.

    Args:
        exchange: the exchange this serves.
        providers: the providers to ask, at least one.
        single: answer a failing provider's own error (one provider was asked for)
            instead of leaving it out of the list.
        wanted: answer only this model (``provider/model``), 404 when it is not listed.
        extra: entries listed after the providers' (the routing aliases).
    """

    def __init__(self, exchange: Exchange, providers: list[Provider], *, single: bool,
                 wanted: str | None = None, extra: list[dict[str, Any]] | None = None) -> None:
        super().__init__(exchange, _TABLE, Step.COLLECTING, Step.DONE)
        if single:
            self.provider = providers[0]
        self._pending = dict(enumerate(providers))
        self._collected: dict[int, ProviderResponse | ProviderFailed] = {}
        self._single = single
        self._wanted = wanted
        self._extra = extra or []

    def start(self) -> list[Effect]:
        """Return one buffered call per provider; they may run in parallel."""
        effects: list[Effect] = []
        for number, provider in self._pending.items():
            headers = [(b"accept", b"application/json"), *provider.auth_headers()]
            url = provider.url(provider.spec.models_path)
            effects.append(CallProvider(number, provider.id, "GET", url, headers, b"",
                                        buffer=True))
        return effects

    def kind(self, event: Event) -> type:
        """Tell the result that completes the set from the ones before it."""
        if isinstance(event, ProviderResponse | ProviderFailed) and (
            event.call in self._pending and event.call not in self._collected
            and len(self._collected) + 1 == len(self._pending)
        ):
            return LastResult
        return type(event)

    def _collect(self, event: ProviderResponse | ProviderFailed) -> list[Effect]:
        if event.call not in self._pending or event.call in self._collected:
            raise LocalProtocolError(f"unexpected result for call {event.call}")
        self._collected[event.call] = event
        return []

    def _answer(self, event: ProviderResponse | ProviderFailed) -> list[Effect]:
        self._collected[event.call] = event
        gateway, request_id = self.exchange.gateway, self.exchange.request_id
        models: list[dict[str, Any]] = []
        for number, provider in self._pending.items():
            result = self._collected[number]
            if isinstance(result, ProviderFailed):
                log.warning(
                    "model list failed",
                    extra={"request_id": request_id, "provider": provider.id,
                           "reason": result.reason.value,
                           "detail": scrub(result.detail, gateway.secrets)},
                )
                if self._single:
                    raise provider_failure(provider.id, result, gateway.secrets)
                continue
            if not 200 <= result.status < 300:
                log.warning("model list failed",
                            extra={"request_id": request_id, "provider": provider.id,
                                   "status": result.status})
                if self._single:
                    self.status = result.status
                    out = upstream_error_body(result.status, result.body, provider.id,
                                              gateway.secrets)
                    return json_response(result.status, out, request_id)
                continue
            try:
                models.extend(parse_model_list(provider.id, result.body))
            except ValueError:
                log.warning("model list unreadable",
                            extra={"request_id": request_id, "provider": provider.id})
        models = [*filter_models(models, gateway.policy), *self._extra]
        answer: Any = {"object": "list", "data": models}
        if self._wanted is not None:
            answer = next((m for m in models if m["id"] == self._wanted), None)
            if answer is None:
                raise NotFound(f"model '{self._wanted}' not found")
        self.status = 200
        return json_response(200, json_bytes(answer), request_id)


_M = ModelsFlow
_TABLE: Final[Table] = by_state({
    (Step.COLLECTING, ProviderResponse): (_M._collect, Step.COLLECTING),
    (Step.COLLECTING, ProviderFailed): (_M._collect, Step.COLLECTING),
    (Step.COLLECTING, LastResult): (_M._answer, Step.DONE),
})
