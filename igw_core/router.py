"""Alias routing: which deployment serves each attempt of a request, and what comes next.

An alias (``fast-chat``) names deployments, each a ``provider``/``model`` pair. A
:class:`Router` holds one process's routing state over a :class:`RoutingTable`
(rotation counters, cool-downs, latency averages); each request walks it through one
:class:`Attempts`. Pure: the time comes in as ``now``, seconds on any monotonic clock.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

__all__ = [
    "DEFAULT_COOLDOWN",
    "LATENCY_ALPHA",
    "LATENCY_EXPLORE_EVERY",
    "RETRYABLE_STATUSES",
    "Alias",
    "AttemptFact",
    "Attempts",
    "Choice",
    "Deployment",
    "Router",
    "RoutingTable",
    "Strategy",
]

#: Provider answers after which another deployment is tried (and this one cools down).
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504, 529})
#: Seconds a failed deployment is skipped when its alias sets no ``cooldown``.
DEFAULT_COOLDOWN = 30.0
#: Weight of the newest sample in a deployment's latency average.
LATENCY_ALPHA = 0.3
#: ``least_latency`` explores the least recently picked deployment on every Nth pick it
#: makes for an alias (picks of a cooling deployment, when all are cooling, not counted).
LATENCY_EXPLORE_EVERY = 10


class Strategy(enum.Enum):
    """How an alias picks among its ready deployments."""

    ROUND_ROBIN = "round_robin"  # a rotating counter per alias
    WEIGHTED = "weighted"  # smooth weighted round robin (nginx's)
    LEAST_LATENCY = "least_latency"  # lowest moving average of the time to response head
    ORDERED = "ordered"  # the first in file order


@dataclass(frozen=True, slots=True)
class Deployment:
    """One place an alias is served: a provider id (lower case) and its model name."""

    provider: str
    model: str
    weight: int = 1


@dataclass(frozen=True, slots=True)
class Alias:
    """A model name clients send that the gateway serves from its deployments.

    Attributes:
        name: the alias, as written in the routing file (case-sensitive).
        strategy: how the first and each further deployment is picked.
        deployments: at least one, in file order.
        retries: further attempts on other deployments of this alias after a failure.
        fallbacks: aliases tried in order once this one is exhausted (theirs are not).
        cooldown: seconds a failed deployment is skipped.
        timeout: seconds each attempt may wait for the response head, or ``None``.
    """

    name: str
    strategy: Strategy
    deployments: tuple[Deployment, ...]
    retries: int = 0
    fallbacks: tuple[str, ...] = ()
    cooldown: float = DEFAULT_COOLDOWN
    timeout: float | None = None

    @property
    def budget(self) -> int:
        """How many attempts one request makes on this alias: ``1 + retries``, at most one
        per deployment."""
        return min(1 + self.retries, len(self.deployments))


@dataclass(frozen=True, slots=True)
class RoutingTable:
    """Every alias by name (case-sensitive), in file order."""

    aliases: Mapping[str, Alias]


@dataclass(frozen=True, slots=True)
class Choice:
    """One attempt of a request: send it to ``deployment`` of ``alias``.

    Attributes:
        alias: the alias the deployment belongs to (the requested one or a fallback).
        deployment: where to send the attempt.
        number: the attempt's 1-based count within the request.
        timeout: the alias's per-attempt timeout to the response head, or ``None``.
    """

    alias: str
    deployment: Deployment
    number: int
    timeout: float | None = None


@dataclass(frozen=True, slots=True)
class AttemptFact:
    """How one attempt ended, for logs and metrics.

    ``outcome`` is ``"ok"``; ``"retry"`` (failed, another deployment of the same alias
    is next), ``"fallback"`` (failed, a fallback alias is next), ``"exhausted"`` (failed,
    nothing is left); or ``"failed"`` (a non-retryable answer, passed to the client).
    """

    alias: str
    provider: str
    model: str
    outcome: str


_Key = tuple[str, str, str]  # (alias, provider, model): what routing state is kept for
_K = TypeVar("_K")
_V = TypeVar("_V")


def _key(alias: Alias, deployment: Deployment) -> _Key:
    return (alias.name, deployment.provider, deployment.model)


class Router:
    """Per-process routing state over a :class:`RoutingTable`: rotation counters,
    cool-downs, latency averages.

    One router is shared by every request of a process (a single-threaded event loop,
    so no locks). State is kept per deployment, keyed by (alias, provider, model).

    Attributes:
        table: the aliases this router serves.
    """

    def __init__(self, table: RoutingTable) -> None:
        self.table = table
        self._rotation: dict[str, int] = {}  # round_robin: the index to start from
        self._current_weight: dict[_Key, int] = {}  # weighted: nginx's current_weight
        self._cool_until: dict[_Key, float] = {}
        self._latency: dict[_Key, float] = {}  # least_latency: moving average, seconds
        self._latency_picks: dict[str, int] = {}  # least_latency picks per alias
        self._picked_at: dict[_Key, int] = {}  # the router-wide pick count at the last pick
        self._picks = 0

    def attempts(self, alias: str) -> Attempts:
        """Start one request's walk over ``alias`` and its fallbacks.

        Raises:
            KeyError: no alias has this name.
        """
        return Attempts(self, alias)

    def cooling(self, alias: str, now: float) -> int:
        """Return how many deployments of ``alias`` are cooling down at ``now``.

        Raises:
            KeyError: no alias has this name.
        """
        entry = self.table.aliases[alias]
        return sum(1 for d in entry.deployments if self._is_cooling(_key(entry, d), now))

    def reloaded(self, table: RoutingTable) -> Router:
        """Return a router for ``table`` that keeps this one's state where it still applies.

        Cool-downs, latency averages and pick history carry over for each deployment
        (alias, provider, model) present in both tables; an alias's rotation counter
        when the alias survives; weighted round robin's running weights only when the
        alias's deployments (weights included) are unchanged. This router is left as is.
        """
        new = Router(table)
        new._picks = self._picks
        for alias in table.aliases.values():
            old = self.table.aliases.get(alias.name)
            if old is None:
                continue
            _copy(self._rotation, new._rotation, alias.name)
            _copy(self._latency_picks, new._latency_picks, alias.name)
            same_deployments = old.deployments == alias.deployments
            for deployment in alias.deployments:
                key = _key(alias, deployment)
                _copy(self._cool_until, new._cool_until, key)
                _copy(self._latency, new._latency, key)
                _copy(self._picked_at, new._picked_at, key)
                if same_deployments:
                    _copy(self._current_weight, new._current_weight, key)
        return new

    # --- used by Attempts ---------------------------------------------------------

    def _is_cooling(self, key: _Key, now: float) -> bool:
        return now < self._cool_until.get(key, float("-inf"))

    def _pick(self, alias: Alias, tried: set[_Key], now: float) -> Deployment | None:
        """Return the next deployment of ``alias`` not in ``tried``, or ``None`` if none is
        left; a cooling one only when every untried one is cooling."""
        untried = [d for d in alias.deployments if _key(alias, d) not in tried]
        if not untried:
            return None
        ready = [d for d in untried if not self._is_cooling(_key(alias, d), now)]
        if ready:
            chosen = _PICKERS[alias.strategy](self, alias, ready)
        else:
            # Rather than refuse, try the deployment that has been cooling the longest.
            chosen = min(untried, key=lambda d: self._cool_until[_key(alias, d)])
        self._picks += 1
        self._picked_at[_key(alias, chosen)] = self._picks
        return chosen

    def _cool(self, key: _Key, now: float, seconds: float) -> bool:
        """Cool ``key`` down until ``now + seconds`` (never shortening a longer one);
        return whether it entered cool-down, i.e. was not already cooling at ``now``."""
        was_cooling = self._is_cooling(key, now)
        self._cool_until[key] = max(self._cool_until.get(key, float("-inf")), now + seconds)
        return not was_cooling and self._is_cooling(key, now)

    def _observe(self, key: _Key, latency: float) -> None:
        sample = max(latency, 0.0)
        average = self._latency.get(key)
        self._latency[key] = (
            sample if average is None else LATENCY_ALPHA * sample + (1 - LATENCY_ALPHA) * average
        )


def _copy(source: dict[_K, _V], target: dict[_K, _V], key: _K) -> None:
    if key in source:
        target[key] = source[key]


# --- strategies: each picks one of ``ready`` (untried, not cooling, file order) ----------


def _round_robin(router: Router, alias: Alias, ready: Sequence[Deployment]) -> Deployment:
    count = len(alias.deployments)
    start = router._rotation.get(alias.name, 0) % count
    ready_keys = {_key(alias, d) for d in ready}
    for offset in range(count):
        index = (start + offset) % count
        deployment = alias.deployments[index]
        if _key(alias, deployment) in ready_keys:
            router._rotation[alias.name] = index + 1
            return deployment
    raise AssertionError("ready deployments belong to the alias")  # pragma: no cover


def _weighted(router: Router, alias: Alias, ready: Sequence[Deployment]) -> Deployment:
    # nginx's smooth weighted round robin: over a cycle of sum(weights) picks each
    # deployment is picked exactly its weight times, interleaved rather than in runs.
    total = 0
    best: Deployment | None = None
    best_weight = 0
    for deployment in ready:
        key = _key(alias, deployment)
        current = router._current_weight.get(key, 0) + deployment.weight
        router._current_weight[key] = current
        total += deployment.weight
        if best is None or current > best_weight:
            best, best_weight = deployment, current
    assert best is not None
    router._current_weight[_key(alias, best)] -= total
    return best


def _least_latency(router: Router, alias: Alias, ready: Sequence[Deployment]) -> Deployment:
    picks = router._latency_picks.get(alias.name, 0) + 1
    router._latency_picks[alias.name] = picks

    def recency(deployment: Deployment) -> int:
        return router._picked_at.get(_key(alias, deployment), 0)

    unsampled = [d for d in ready if _key(alias, d) not in router._latency]
    if unsampled:
        return min(unsampled, key=recency)
    if picks % LATENCY_EXPLORE_EVERY == 0:
        # Explore, or a deployment that was slow once would never be measured again.
        return min(ready, key=recency)
    return min(ready, key=lambda d: router._latency[_key(alias, d)])


def _ordered(router: Router, alias: Alias, ready: Sequence[Deployment]) -> Deployment:
    return ready[0]


_PICKERS: dict[Strategy, Callable[[Router, Alias, Sequence[Deployment]], Deployment]] = {
    Strategy.ROUND_ROBIN: _round_robin,
    Strategy.WEIGHTED: _weighted,
    Strategy.LEAST_LATENCY: _least_latency,
    Strategy.ORDERED: _ordered,
}


class Attempts:
    """One request's walk: up to ``1 + retries`` distinct deployments of the alias (fewer
    if it has fewer), then each fallback alias in order with its own retries (fallbacks of
    fallbacks are NOT followed), then exhausted.

    Call :meth:`first`, then after each attempt exactly one of :meth:`failed` (which may
    hand back the next choice), :meth:`succeeded` or :meth:`refused`.

    Attributes:
        facts: how each attempt ended, in order.
        cooled: (alias, provider, model) of each deployment that entered cool-down
            during this request (one that was already cooling is not listed again).
    """

    def __init__(self, router: Router, alias: str) -> None:
        """Start a walk over ``alias`` of ``router``'s table.

        Raises:
            KeyError: no alias has this name.
        """
        aliases = router.table.aliases
        primary = aliases[alias]
        plan = [primary]
        for name in primary.fallbacks:
            fallback = aliases.get(name)
            if fallback is not None and all(fallback.name != p.name for p in plan):
                plan.append(fallback)
        self._router = router
        self._plan: tuple[Alias, ...] = tuple(plan)
        self._stage = 0  # index in _plan of the alias being tried
        self._tried: set[_Key] = set()  # deployments of that alias tried so far
        self._number = 0
        self._started = False
        self._current: Choice | None = None
        self.facts: list[AttemptFact] = []
        self.cooled: list[tuple[str, str, str]] = []

    def first(self, now: float) -> Choice:
        """Return the first attempt's choice (an alias always has a deployment to try).

        Raises:
            ValueError: called twice, or the alias has no deployments.
        """
        if self._started:
            raise ValueError("first() was already called for this request")
        self._started = True
        choice = self._next(now)
        if choice is None:
            raise ValueError(f"alias {self._plan[0].name!r} has no deployments")
        return choice

    def failed(
        self,
        choice: Choice,
        now: float,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> Choice | None:
        """Record a transient failure of ``choice`` and return the next choice, or ``None``
        when the walk is exhausted.

        ``status`` is ``None`` for a failure before the response head (connection
        refused or reset, timeout), else the provider's status, one of
        :data:`RETRYABLE_STATUSES`. The deployment cools down for the alias's cooldown,
        or ``retry_after`` seconds when that is longer. Appends a fact ``"retry"``,
        ``"fallback"`` or ``"exhausted"`` for ``choice``.

        Raises:
            ValueError: ``choice`` is not the attempt in progress, or ``status`` is not
                retryable (use :meth:`refused`).
        """
        if status is not None and status not in RETRYABLE_STATUSES:
            raise ValueError(f"status {status} is not retryable; use refused()")
        self._finish(choice)
        alias = self._plan[self._stage]
        seconds = alias.cooldown
        if retry_after is not None and retry_after > seconds:
            seconds = retry_after
        key = _key(alias, choice.deployment)
        if self._router._cool(key, now, seconds):
            self.cooled.append(key)
        following = self._next(now)
        if following is None:
            outcome = "exhausted"
        else:
            outcome = "retry" if following.alias == choice.alias else "fallback"
        self._fact(choice, outcome)
        return following

    def succeeded(self, choice: Choice, now: float, *, latency: float) -> None:
        """Record that ``choice`` answered; ``latency`` (seconds to the response head)
        feeds the deployment's ``least_latency`` average. Appends the fact ``"ok"``.

        ``now`` is accepted for symmetry with :meth:`failed`; a success does not end a
        cool-down (a request that was already in flight says little about a 429).

        Raises:
            ValueError: ``choice`` is not the attempt in progress.
        """
        self._finish(choice)
        self._router._observe(_key(self._plan[self._stage], choice.deployment), latency)
        self._fact(choice, "ok")

    def refused(self, choice: Choice) -> None:
        """Record a non-retryable answer of ``choice`` (passed on to the client): the fact
        ``"failed"``, and no cool-down.

        Raises:
            ValueError: ``choice`` is not the attempt in progress.
        """
        self._finish(choice)
        self._fact(choice, "failed")

    def _finish(self, choice: Choice) -> None:
        if self._current is None or choice != self._current:
            raise ValueError(f"{choice!r} is not the attempt in progress")
        self._current = None

    def _fact(self, choice: Choice, outcome: str) -> None:
        deployment = choice.deployment
        self.facts.append(AttemptFact(choice.alias, deployment.provider, deployment.model,
                                      outcome))

    def _next(self, now: float) -> Choice | None:
        while self._stage < len(self._plan):
            alias = self._plan[self._stage]
            if len(self._tried) < alias.budget:
                deployment = self._router._pick(alias, self._tried, now)
                if deployment is not None:
                    self._tried.add(_key(alias, deployment))
                    self._number += 1
                    self._current = Choice(alias.name, deployment, self._number, alias.timeout)
                    return self._current
            self._stage += 1
            self._tried = set()
        return None
