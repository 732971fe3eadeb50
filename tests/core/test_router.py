"""Properties of igw_core.router: picking deployments of an alias, retries, fallbacks,
cool-downs, and the state a Router keeps across requests and reloads."""

from __future__ import annotations

from collections import Counter
from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from igw_core.router import (
    LATENCY_EXPLORE_EVERY,
    RETRYABLE_STATUSES,
    Alias,
    AttemptFact,
    Choice,
    Deployment,
    Router,
    RoutingTable,
    Strategy,
)

FAST = settings(max_examples=150, deadline=None)

Key = tuple[str, str, str]


def make_alias(name: str, count: int, strategy: Strategy = Strategy.ROUND_ROBIN, *,
               weights: tuple[int, ...] | None = None, retries: int = 0,
               fallbacks: tuple[str, ...] = (), cooldown: float = 30.0,
               timeout: float | None = None) -> Alias:
    weights = weights or (1,) * count
    deployments = tuple(Deployment("openai" if i % 2 else "groq", f"{name}-m{i}", weights[i])
                        for i in range(count))
    return Alias(name, strategy, deployments, retries, fallbacks, cooldown, timeout)


def make_table(*aliases: Alias) -> RoutingTable:
    return RoutingTable(MappingProxyType({a.name: a for a in aliases}))


def key_of(choice: Choice) -> Key:
    return (choice.alias, choice.deployment.provider, choice.deployment.model)


def serve_once(router: Router, alias: str, now: float, latency: float = 0.1) -> Choice:
    """One request that succeeds on its first attempt; return that attempt."""
    attempts = router.attempts(alias)
    choice = attempts.first(now)
    attempts.succeeded(choice, now, latency=latency)
    return choice


def index_of(alias: Alias, choice: Choice) -> int:
    return alias.deployments.index(choice.deployment)


# --- weighted ---------------------------------------------------------------------------


@FAST
@given(st.lists(st.integers(1, 6), min_size=1, max_size=5), st.integers(1, 3))
def test_weighted_shares_are_exact_over_every_whole_cycle(weights: list[int],
                                                         cycles: int) -> None:
    alias = make_alias("w", len(weights), Strategy.WEIGHTED, weights=tuple(weights))
    router = Router(make_table(alias))
    cycle = sum(weights)
    picks = [index_of(alias, serve_once(router, "w", float(i))) for i in range(cycle * cycles)]
    # Any window of one cycle (not only those starting at 0) holds each exactly weight times.
    for start in range(len(picks) - cycle + 1):
        counts = Counter(picks[start:start + cycle])
        assert [counts[i] for i in range(len(weights))] == weights


def test_weighted_interleaves_rather_than_running_one_deployment() -> None:
    alias = make_alias("w", 2, Strategy.WEIGHTED, weights=(3, 1))
    router = Router(make_table(alias))
    picks = [index_of(alias, serve_once(router, "w", 0.0)) for _ in range(8)]
    assert picks == [0, 0, 1, 0] * 2


# --- round robin and ordered ------------------------------------------------------------


@FAST
@given(st.integers(1, 6), st.integers(1, 4))
def test_round_robin_spreads_consecutive_requests_over_all_deployments(count: int,
                                                                      rounds: int) -> None:
    alias = make_alias("rr", count)
    router = Router(make_table(alias))
    picks = [index_of(alias, serve_once(router, "rr", 0.0)) for _ in range(count * rounds)]
    for start in range(0, len(picks), count):
        assert sorted(picks[start:start + count]) == list(range(count))


def test_ordered_takes_the_first_deployment_not_cooling() -> None:
    alias = make_alias("o", 3, Strategy.ORDERED, retries=2)
    router = Router(make_table(alias))
    assert index_of(alias, serve_once(router, "o", 0.0)) == 0
    attempts = router.attempts("o")
    first = attempts.first(0.0)
    second = attempts.failed(first, 0.0, status=503)
    assert second is not None and index_of(alias, second) == 1
    attempts.succeeded(second, 0.0, latency=0.1)
    assert index_of(alias, serve_once(router, "o", 1.0)) == 1
    assert index_of(alias, serve_once(router, "o", 31.0)) == 0  # cooled down


# --- least latency ----------------------------------------------------------------------


@FAST
@given(st.lists(st.floats(0.01, 10.0), min_size=2, max_size=4, unique=True))
def test_least_latency_prefers_the_fastest_and_explores_every_tenth_pick(
    latencies: list[float],
) -> None:
    count = len(latencies)
    alias = make_alias("ll", count, Strategy.LEAST_LATENCY)
    router = Router(make_table(alias))
    picks = []
    for i in range(80):
        attempts = router.attempts("ll")
        choice = attempts.first(float(i))
        picks.append(index_of(alias, choice))
        attempts.succeeded(choice, float(i), latency=latencies[picks[-1]])
    assert sorted(picks[:count]) == list(range(count))  # deployments with no sample first
    fastest = latencies.index(min(latencies))
    later = picks[count:]
    for start in range(len(later) - LATENCY_EXPLORE_EVERY + 1):
        window = later[start:start + LATENCY_EXPLORE_EVERY]
        assert window.count(fastest) == LATENCY_EXPLORE_EVERY - 1
    # Exploration takes the least recently picked, so every slower one is measured again.
    span = LATENCY_EXPLORE_EVERY * (count - 1)
    for start in range(len(later) - span + 1):
        assert set(later[start:start + span]) == set(range(count))


def test_least_latency_follows_the_moving_average_not_the_last_sample() -> None:
    alias = make_alias("ll", 2, Strategy.LEAST_LATENCY)
    router = Router(make_table(alias))
    serve_once(router, "ll", 0.0, latency=1.0)  # deployment 0 averages 1.0
    serve_once(router, "ll", 0.0, latency=1.2)  # deployment 1 averages 1.2
    assert index_of(alias, serve_once(router, "ll", 0.0, latency=1.5)) == 0
    # 0.3 * 1.5 + 0.7 * 1.0 = 1.15: still the faster, though its last sample was slower.
    assert index_of(alias, serve_once(router, "ll", 0.0, latency=1.5)) == 0
    # 0.3 * 1.5 + 0.7 * 1.15 = 1.255: now deployment 1 is.
    assert index_of(alias, serve_once(router, "ll", 0.0)) == 1


def test_failures_do_not_feed_the_latency_average() -> None:
    alias = make_alias("ll", 2, Strategy.LEAST_LATENCY, retries=1, cooldown=0.0)
    router = Router(make_table(alias))
    serve_once(router, "ll", 0.0, latency=0.5)
    serve_once(router, "ll", 0.0, latency=0.9)
    for _ in range(5):  # deployment 0 fails fast, again and again
        attempts = router.attempts("ll")
        choice = attempts.first(0.0)
        assert index_of(alias, choice) == 0
        following = attempts.failed(choice, 0.0, status=500)
        assert following is not None
        attempts.succeeded(following, 0.0, latency=0.9)


# --- cool-downs -------------------------------------------------------------------------


def test_a_failed_deployment_is_skipped_until_its_cooldown_ends() -> None:
    alias = make_alias("c", 2, Strategy.ORDERED, cooldown=10.0)
    router = Router(make_table(alias))
    attempts = router.attempts("c")
    choice = attempts.first(100.0)
    assert attempts.failed(choice, 100.0) is None  # no retries: exhausted
    assert attempts.cooled == [key_of(choice)]
    assert router.cooling("c", 100.0) == 1
    assert router.cooling("c", 109.99) == 1
    assert router.cooling("c", 110.0) == 0
    assert index_of(alias, serve_once(router, "c", 105.0)) == 1
    assert index_of(alias, serve_once(router, "c", 110.0)) == 0


def test_retry_after_extends_the_cooldown_and_never_shortens_it() -> None:
    alias = make_alias("c", 2, Strategy.ORDERED, cooldown=30.0)
    router = Router(make_table(alias))
    attempts = router.attempts("c")
    attempts.failed(attempts.first(0.0), 0.0, status=429, retry_after=120.0)
    assert router.cooling("c", 60.0) == 1
    assert router.cooling("c", 119.0) == 1
    assert router.cooling("c", 120.0) == 0
    attempts = router.attempts("c")
    first = attempts.first(200.0)
    attempts.failed(first, 200.0, status=429, retry_after=5.0)  # shorter than cooldown
    assert router.cooling("c", 229.0) == 1
    assert router.cooling("c", 230.0) == 0


def test_with_every_deployment_cooling_the_one_cooling_longest_is_still_tried() -> None:
    alias = make_alias("c", 3, Strategy.ROUND_ROBIN, retries=2, cooldown=50.0)
    router = Router(make_table(alias))
    attempts = router.attempts("c")
    order = []
    choice: Choice | None = attempts.first(0.0)
    for now in (0.0, 1.0, 2.0):  # each fails a second later than the one before
        assert choice is not None
        order.append(index_of(alias, choice))
        choice = attempts.failed(choice, now, status=503)
    assert choice is None and router.cooling("c", 10.0) == 3
    attempts = router.attempts("c")
    again = attempts.first(10.0)
    assert index_of(alias, again) == order[0]  # its cool-down ends first
    following = attempts.failed(again, 10.0, status=503)
    assert following is not None and index_of(alias, following) == order[1]
    assert attempts.cooled == []  # both were already cooling


def test_a_refused_answer_neither_cools_nor_retries() -> None:
    alias = make_alias("c", 2, retries=1)
    router = Router(make_table(alias))
    attempts = router.attempts("c")
    choice = attempts.first(0.0)
    attempts.refused(choice)
    assert router.cooling("c", 0.0) == 0
    assert attempts.facts == [AttemptFact("c", choice.deployment.provider,
                                          choice.deployment.model, "failed")]
    assert attempts.cooled == []


# --- the walk: retries and fallbacks ----------------------------------------------------


def test_the_walk_retries_then_falls_back_then_is_exhausted() -> None:
    primary = make_alias("p", 3, Strategy.ORDERED, retries=1, fallbacks=("f", "g"),
                         timeout=20.0)
    fallback = make_alias("f", 2, Strategy.ORDERED, retries=5, fallbacks=("g",))
    never = make_alias("g", 1)
    router = Router(make_table(primary, fallback, never))
    attempts = router.attempts("p")
    choices = [attempts.first(0.0)]
    while (following := attempts.failed(choices[-1], 0.0, status=None)) is not None:
        choices.append(following)
    assert [(c.alias, c.deployment.model, c.number) for c in choices] == [
        ("p", "p-m0", 1), ("p", "p-m1", 2), ("f", "f-m0", 3), ("f", "f-m1", 4),
        ("g", "g-m0", 5)]
    assert [c.timeout for c in choices] == [20.0, 20.0, None, None, None]
    assert [f.outcome for f in attempts.facts] == [
        "retry", "fallback", "retry", "fallback", "exhausted"]
    assert attempts.cooled == [key_of(c) for c in choices]


def test_a_fallback_that_succeeds_ends_the_walk() -> None:
    router = Router(make_table(make_alias("p", 1, fallbacks=("f",)), make_alias("f", 1)))
    attempts = router.attempts("p")
    following = attempts.failed(attempts.first(0.0), 0.0, status=529)
    assert following is not None and following.alias == "f"
    attempts.succeeded(following, 0.0, latency=0.2)
    assert [f.outcome for f in attempts.facts] == ["fallback", "ok"]


def test_misuse_is_refused() -> None:
    router = Router(make_table(make_alias("p", 2, retries=1)))
    with pytest.raises(KeyError):
        router.attempts("nope")
    with pytest.raises(KeyError):
        router.cooling("nope", 0.0)
    attempts = router.attempts("p")
    choice = attempts.first(0.0)
    with pytest.raises(ValueError):
        attempts.first(0.0)
    with pytest.raises(ValueError, match="not retryable"):
        attempts.failed(choice, 0.0, status=404)
    attempts = router.attempts("p")
    choice = attempts.first(0.0)
    following = attempts.failed(choice, 0.0, status=500)
    assert following is not None
    with pytest.raises(ValueError, match="not the attempt in progress"):
        attempts.succeeded(choice, 0.0, latency=0.1)
    attempts.succeeded(following, 0.0, latency=0.1)
    with pytest.raises(ValueError):
        attempts.refused(following)


@st.composite
def tables(draw: st.DrawFn) -> RoutingTable:
    """Tables of 1-4 aliases whose fallbacks may name anything, themselves and cycles
    included (a hand-built table is not checked like a file)."""
    names = [f"a{i}" for i in range(draw(st.integers(1, 4)))]
    aliases = []
    for name in names:
        strategy = draw(st.sampled_from(list(Strategy)))
        count = draw(st.integers(1, 4))
        weights = tuple(draw(st.integers(1, 3)) for _ in range(count))
        aliases.append(make_alias(
            name, count, strategy, weights=weights, retries=draw(st.integers(0, 4)),
            fallbacks=tuple(draw(st.lists(st.sampled_from([*names, "ghost"]), max_size=4))),
            cooldown=draw(st.sampled_from([0.0, 5.0, 30.0]))))
    return make_table(*aliases)


def plan_of(table: RoutingTable, name: str) -> list[str]:
    plan = [name]
    for fallback in table.aliases[name].fallbacks:
        if fallback in table.aliases and fallback not in plan:
            plan.append(fallback)
    return plan


@settings(max_examples=200, deadline=None)
@given(tables(), st.data())
def test_every_walk_is_finite_ordered_and_respects_cooldowns(table: RoutingTable,
                                                             data: st.DataObject) -> None:
    router = Router(table)
    until: dict[Key, float] = {}  # the test's own record of every cool-down
    now = 0.0

    def cooling(key: Key) -> bool:
        return now < until.get(key, float("-inf"))

    for _ in range(data.draw(st.integers(1, 12))):
        now += data.draw(st.sampled_from([0.0, 1.0, 7.0, 40.0]))
        name = data.draw(st.sampled_from(list(table.aliases)))
        plan = plan_of(table, name)
        budget = {n: table.aliases[n].budget for n in plan}
        tried: dict[str, list[Key]] = {n: [] for n in plan}
        attempts = router.attempts(name)
        choice: Choice | None = attempts.first(now)
        stage = 0
        while choice is not None:
            # Fallbacks of fallbacks are never followed, and the plan is walked in order.
            assert choice.alias in plan and plan.index(choice.alias) >= stage
            stage = plan.index(choice.alias)
            assert all(len(tried[n]) == budget[n] for n in plan[:stage])
            alias = table.aliases[choice.alias]
            key = key_of(choice)
            untried = [k for d in alias.deployments
                       if (k := (alias.name, d.provider, d.model)) not in tried[alias.name]]
            assert key in untried  # never the same deployment twice in one alias pass
            if cooling(key):
                # Only when every untried one is cooling, and then the one ending first.
                assert all(cooling(k) for k in untried)
                assert until[key] == min(until[k] for k in untried)
            tried[alias.name].append(key)
            assert len(tried[alias.name]) <= budget[alias.name]
            assert choice.number == sum(len(t) for t in tried.values())
            action = data.draw(st.sampled_from(["fail", "fail", "fail", "ok", "refuse"]))
            if action == "ok":
                attempts.succeeded(choice, now, latency=data.draw(st.floats(0.0, 3.0)))
                break
            if action == "refuse":
                attempts.refused(choice)
                break
            status = data.draw(st.sampled_from([None, *sorted(RETRYABLE_STATUSES)]))
            retry_after = data.draw(st.sampled_from([None, 2.0, 60.0]))
            until[key] = max(until.get(key, float("-inf")),
                             now + max(alias.cooldown, retry_after or 0.0))
            choice = attempts.failed(choice, now, status=status, retry_after=retry_after)
            outcome = attempts.facts[-1].outcome
            if choice is None:
                assert outcome == "exhausted"
                assert all(len(tried[n]) == budget[n] for n in plan)
            else:
                assert outcome == ("retry" if choice.alias == alias.name else "fallback")
        total = sum(len(t) for t in tried.values())
        assert total == len(attempts.facts) <= sum(budget.values())


# --- reloading --------------------------------------------------------------------------


def test_reloaded_keeps_state_only_for_surviving_deployments() -> None:
    old_alias = make_alias("c", 3, Strategy.ORDERED, retries=2)  # c-m0, c-m1, c-m2
    gone = make_alias("gone", 1)
    router = Router(make_table(old_alias, gone))
    attempts = router.attempts("c")
    choice: Choice | None = attempts.first(0.0)
    while choice is not None:
        choice = attempts.failed(choice, 0.0, status=503)
    assert router.cooling("c", 1.0) == 3
    # c-m1 removed, c-m3 added.
    kept = (old_alias.deployments[0], old_alias.deployments[2])
    new_alias = Alias("c", Strategy.ORDERED, (*kept, Deployment("groq", "c-m3")), retries=2)
    reloaded = router.reloaded(make_table(new_alias))
    assert reloaded.table.aliases.keys() == {"c"}
    assert reloaded.cooling("c", 1.0) == 2
    assert serve_once(reloaded, "c", 1.0).deployment.model == "c-m3"
    assert router.cooling("c", 1.0) == 3  # the old router is untouched
    # c-m1 comes back: its old cool-down was dropped with it.
    back = Alias("c", Strategy.ORDERED, old_alias.deployments, retries=2)
    again = reloaded.reloaded(make_table(back))
    assert again.cooling("c", 1.0) == 2
    assert serve_once(again, "c", 1.0).deployment.model == "c-m1"


def test_reloaded_keeps_latency_averages_and_rotation() -> None:
    alias = make_alias("ll", 2, Strategy.LEAST_LATENCY)
    router = Router(make_table(alias))
    serve_once(router, "ll", 0.0, latency=2.0)
    serve_once(router, "ll", 0.0, latency=0.5)
    reloaded = router.reloaded(make_table(alias))
    assert index_of(alias, serve_once(reloaded, "ll", 0.0)) == 1
    rr = make_alias("rr", 3)
    router = Router(make_table(rr))
    serve_once(router, "rr", 0.0)
    assert index_of(rr, serve_once(router.reloaded(make_table(rr)), "rr", 0.0)) == 1
