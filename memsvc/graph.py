"""The memory graph of one user (networkx): units as nodes, links as edges; associative recall by PPR."""

from collections.abc import Sequence

import networkx as nx
import numpy as np
from scipy import sparse

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
        self._nodes = list(graph.nodes)
        self._position = {node: i for i, node in enumerate(self._nodes)}
        # entity token tuple -> entity node, for finding the entities a query names
        self.entities = {
            tuple(tokenize(name)): node
            for node, name in entity_names.items()
            if node in graph and tokenize(name)
        }
        if not self._nodes:  # a user whose memory is not built yet: nothing to walk (networkx
            return  # would refuse the empty matrix), and associate() finds no seed in _position
        adjacency = nx.to_scipy_sparse_array(graph, nodelist=self._nodes, weight="weight", format="csr")
        degree = np.asarray(adjacency.sum(axis=1)).ravel()
        self._dangling = degree == 0
        inverse = np.divide(1.0, degree, out=np.zeros_like(degree, dtype=float), where=degree > 0)
        # column-stochastic: rank at a node flows to its neighbours in proportion to edge weight
        self._transition = (sparse.diags(inverse) @ adjacency).T.tocsr()

    def query_entities(self, query: str) -> list[int]:
        """Entities whose every word appears in the query."""
        words = set(tokenize(query))
        return [node for tokens, node in self.entities.items() if set(tokens) <= words]

    def associate(self, seeds: dict[int, float], kinds: frozenset[str], k: int) -> list[tuple[int, float]]:
        """Personalized PageRank from the seeds; the best `k` nodes of `kinds` that are not seeds."""
        seeds = {n: w for n, w in seeds.items() if n in self._position and w > 0}
        if not seeds:
            return []
        ranks = self._pagerank(seeds)
        found = [
            (self._nodes[i], float(ranks[i]))
            for i in np.flatnonzero(ranks > 0)
            if self._nodes[i] not in seeds and self.kinds.get(self._nodes[i]) in kinds
        ]
        return sorted(found, key=lambda nr: -nr[1])[:k]

    def _pagerank(self, seeds: dict[int, float], tol: float = 1e-8, max_iter: int = 30) -> np.ndarray:
        # networkx.pagerank would rebuild this sparse matrix on every call, which cost ~150 ms a
        # query on a LoCoMo-sized user; the power iteration itself takes well under a millisecond.
        p = np.zeros(len(self._nodes))
        for node, weight in seeds.items():
            p[self._position[node]] = weight
        p /= p.sum()
        r = p.copy()  # starting at the seeds, rank never reaches what they cannot reach
        for _ in range(max_iter):
            dangling = r[self._dangling].sum()
            nxt: np.ndarray = PPR_ALPHA * (self._transition @ r + dangling * p) + (1 - PPR_ALPHA) * p
            if np.abs(nxt - r).sum() < tol:
                return nxt
            r = nxt
        return r
