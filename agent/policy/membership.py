"""Which addresses each active selector matches, across every host, kept up
to date one endpoint at a time so that a container starting anywhere costs
a few selector evaluations, not a rebuild (calico-policy.md §5.6)."""

from collections import Counter

from agent.policy.state import PolicyState
from datastore.selector import Selector


class Membership:
    def __init__(self):
        # selector -> address -> how many endpoints hold it (a stale record
        # may share an address with its successor for a moment)
        self._counts: dict[Selector, Counter] = {}
        # endpoint key -> (label set evaluated, selectors matched, addresses)
        self._seen: dict[str, tuple[frozenset, frozenset, tuple[str, ...]]] = {}
        self._moved: set[Selector] = set()  # whose members may have changed

    def members(self, selector: Selector) -> set[str]:
        return set(self._counts.get(selector, ()))

    def moved(self) -> set[Selector]:
        """The selectors whose members may have changed since last asked."""
        moved, self._moved = self._moved, set()
        return moved

    def set_selectors(self, state: PolicyState, selectors: set[Selector]) -> None:
        """Track exactly these selectors: a scan of every endpoint for the
        new ones (each distinct label set evaluated once)."""
        removed = set(self._counts) - selectors
        added = selectors - set(self._counts)
        for selector in removed:
            del self._counts[selector]
        if removed:
            self._seen = {key: (labels, hits - removed, addresses)
                          for key, (labels, hits, addresses) in self._seen.items()}
        if not added:
            return
        self._moved |= added
        for selector in added:
            self._counts[selector] = Counter()
        memo = {}
        for key, endpoint in state.endpoints.items():
            labels = state.labels_of(endpoint)
            label_key = frozenset(labels.items())
            seen = self._seen.get(key)
            if seen is not None and (seen[0], seen[2]) != (label_key, endpoint.addresses):
                continue  # changed since last evaluated: update() or relabelled() redoes it
            hits = memo.get(label_key)
            if hits is None:
                hits = memo[label_key] = frozenset(s for s in added if s.evaluate(labels))
            _, before, _ = self._seen.get(key, (None, frozenset(), ()))
            self._seen[key] = (label_key, before | hits, endpoint.addresses)
            for selector in hits:
                self._counts[selector].update(endpoint.addresses)

    def update(self, state: PolicyState, key: str) -> None:
        """Endpoint `key` changed, or is gone when not in state.endpoints."""
        endpoint = state.endpoints.get(key)
        seen = self._seen.get(key)
        if endpoint is not None and seen is not None and seen[2] == endpoint.addresses \
                and seen[0] == frozenset(state.labels_of(endpoint).items()):
            return  # evaluated as it is (by set_selectors' scan): nothing moves
        _, before, addresses = self._seen.pop(key, (None, frozenset(), ()))
        self._moved |= before
        for selector in before:
            counts = self._counts[selector]
            counts.subtract(addresses)
            for address in addresses:
                if counts[address] <= 0:
                    del counts[address]
        if endpoint is None:
            return
        labels = state.labels_of(endpoint)
        hits = frozenset(s for s in self._counts if s.evaluate(labels))
        self._seen[key] = (frozenset(labels.items()), hits, endpoint.addresses)
        self._moved |= hits
        for selector in hits:
            self._counts[selector].update(endpoint.addresses)

    def relabelled(self, state: PolicyState) -> list[str]:
        """Endpoints whose label set (own plus inherited) is not the one last
        evaluated: after a profile's labelsToApply changed."""
        return [key for key, endpoint in state.endpoints.items()
                if frozenset(state.labels_of(endpoint).items())
                != self._seen.get(key, (None,))[0]]
