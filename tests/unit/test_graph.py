"""The memory graph's associative step: what personalized PageRank brings in, and what it must not."""

from memsvc.graph import HUB_MIN_DEGREE, MemoryGraph

EDU_KINDS = frozenset({"edu"})


def _graph(extra_edus: int = 0) -> MemoryGraph:
    # EDUs 1-3; entity 10 "Biscuit" links EDU 1 (the question's hit) to EDU 2 (the trip);
    # EDU 3 shares nothing with them.
    kinds = {1: "edu", 2: "edu", 3: "edu", 10: "entity", 11: "entity"}
    links = [(1, 10, "mentions", 1.0), (2, 10, "mentions", 1.0), (3, 11, "mentions", 1.0)]
    for i in range(extra_edus):
        kinds[100 + i] = "edu"
    return MemoryGraph(kinds, {10: "Biscuit", 11: "Lake Tahoe"}, links)


def test_a_seed_reaches_the_fact_that_shares_its_entity_and_not_an_unrelated_one():
    found = dict(_graph().associate({1: 1.0}, EDU_KINDS, k=10))
    assert 2 in found and found[2] > 0
    assert 3 not in found  # no path from the seed
    assert 1 not in found  # seeds are what the caller already has


def test_entities_named_in_the_query_seed_the_walk():
    graph = _graph()
    assert graph.query_entities("What did Biscuit do at lake tahoe?") == [10, 11]
    found = dict(
        graph.associate({e: 1.0 for e in graph.query_entities("Where is Biscuit?")}, EDU_KINDS, k=10)
    )
    assert set(found) == {1, 2}


def test_a_hub_entity_does_not_connect_everything():
    kinds = {i: "edu" for i in range(HUB_MIN_DEGREE + 5)}
    kinds[999] = "entity"
    links = [(i, 999, "mentions", 1.0) for i in range(HUB_MIN_DEGREE + 5)]
    graph = MemoryGraph(kinds, {999: "Jon"}, links)
    assert graph.associate({0: 1.0}, EDU_KINDS, k=10) == []
    assert graph.query_entities("What did Jon do?") == []


def test_a_user_without_memory_has_an_empty_graph_that_finds_nothing():
    graph = MemoryGraph({}, {}, [])
    assert graph.associate({1: 1.0}, EDU_KINDS, k=10) == []
    assert graph.query_entities("anything at all") == []
