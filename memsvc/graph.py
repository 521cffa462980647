"""The memory graph of one user (networkx): units as nodes, links as edges; associative recall by PPR."""

from collections.abc import Sequence

import networkx as nx

from memsvc.lexical import tokenize

# EMem's damping for personalized PageRank: half the mass returns to the seeds each step, so
# recall stays near them (one or two hops) instead of drifting to the graph's hubs.
PPR_ALPHA = 0.5
# An entity named in more than this share of a user's EDUs (the speakers themselves, "family")
# says nothing specific; linking through it would connect everything to everything.
HUB_SHARE = 0.05
HUB_MIN_DEGREE = 20


class MemoryGraph:
    def __init__(
        self,
        kinds: dict[int, str],
        entity_names: dict[int, str],
        links: Sequence[tuple[int, int, str, float]],
    ) -> None:
        self.kinds = kinds
        graph = nx.Graph()
        graph.add_nodes_from(kinds)
        for src, dst, _relation, weight in links:
            if src in kinds and dst in kinds:
                graph.add_edge(src, dst, weight=weight)
        edus = sum(1 for k in kinds.values() if k == "edu")
        limit = max(HUB_MIN_DEGREE, HUB_SHARE * edus)
        hubs = [n for n, k in kinds.items() if k == "entity" and graph.degree(n) > limit]
        graph.remove_nodes_from(hubs)
        self.graph = graph
        # entity token tuple -> entity node, for finding the entities a query names
        self.entities = {
            tuple(tokenize(name)): node
            for node, name in entity_names.items()
            if node in graph and tokenize(name)
        }

    def query_entities(self, query: str) -> list[int]:
        """Entities whose every word appears in the query."""
        words = set(tokenize(query))
        return [node for tokens, node in self.entities.items() if set(tokens) <= words]

    def associate(self, seeds: dict[int, float], kinds: frozenset[str], k: int) -> list[tuple[int, float]]:
        """Personalized PageRank from the seeds; the best `k` nodes of `kinds` that are not seeds."""
        seeds = {n: w for n, w in seeds.items() if n in self.graph and w > 0}
        if not seeds:
            return []
        # Only what the seeds can reach can be associated; walking that part alone is faster and
        # leaves no rounding crumbs of rank on unreachable nodes.
        reachable: set[int] = set()
        for seed in seeds:
            if seed not in reachable:
                reachable |= nx.node_connected_component(self.graph, seed)
        ranks = nx.pagerank(
            self.graph.subgraph(reachable), alpha=PPR_ALPHA, personalization=seeds, weight="weight", tol=1e-6
        )
        found = [(n, r) for n, r in ranks.items() if n not in seeds and self.kinds.get(n) in kinds and r > 0]
        return sorted(found, key=lambda nr: -nr[1])[:k]
