"""Which addresses each active selector matches, across every host, kept up
to date one endpoint at a time so that a container starting anywhere costs
a few selector evaluations, not a rebuild (calico-policy.md §5.6).

Selectors are evaluated once per distinct label set, not per endpoint: the
endpoints of one network and role share theirs, so 30,000 endpoints cost
a few hundred evaluations of each selector, and hold one label set each
between them rather than one apiece."""

from collections import Counter

from agent.policy.state import PolicyState
from datastore.selector import Selector


class _LabelSet:
    """One distinct label set (own plus inherited): the selectors it
    matches, and how many endpoints hold it."""

    __slots__ = ("labels", "hits", "holders")

    def __init__(self, labels: frozenset, hits: frozenset):
        self.labels, self.hits, self.holders = labels, hits, 0


class Membership:
    def __init__(self):
        # selector -> address -> how many endpoints hold it (a stale record
        # may share an address with its successor for a moment)
        self._counts: dict[Selector, Counter] = {}
        self._label_sets: dict[frozenset, _LabelSet] = {}
        # endpoint key -> (its label set, its addresses) as last evaluated
        self._seen: dict[str, tuple[_LabelSet, tuple[str, ...]]] = {}
        # selector -> (addresses gained, addresses lost) since last asked;
        # None for a selector tracked since
        self._moved: dict[Selector, tuple[set[str], set[str]] | None] = {}

    def members(self, selector: Selector) -> set[str]:
        return set(self._counts.get(selector, ()))

    def moved(self) -> dict[Selector, tuple[set[str], set[str]] | None]:
        """The selectors whose members changed since last asked: the
        addresses each gained and lost since (a set of a thousand members
        changes by those, not rebuilt), None for one tracked since (its
        members are members()')."""
        moved, self._moved = self._moved, {}
        return moved

    def set_selectors(self, state: PolicyState, selectors: set[Selector]) -> None:
        """Track exactly these selectors: each label set held is evaluated
        against the new ones, then each endpoint not evaluated yet against
        all.  One changed since it was evaluated is update()'s (the engine
        calls it for each changed endpoint after this)."""
        removed = set(self._counts) - selectors
        added = selectors - set(self._counts)
        for selector in removed:
            del self._counts[selector]
            self._moved.pop(selector, None)
        gained = {}
        for label_set in self._label_sets.values() if added or removed else ():
            hits = frozenset(s for s in added if s.evaluate(dict(label_set.labels)))
            label_set.hits = (label_set.hits - removed) | hits
            gained[label_set.labels] = hits
        for selector in added:
            self._counts[selector] = Counter()
            self._moved[selector] = None
        if added:
            for label_set, addresses in self._seen.values():
                for selector in gained[label_set.labels]:
                    self._counts[selector].update(addresses)
        for key in state.endpoints.keys() - self._seen.keys():
            self.update(state, key)

    def update(self, state: PolicyState, key: str) -> None:
        """Endpoint `key` changed, or is gone when not in state.endpoints."""
        endpoint = state.endpoints.get(key)
        labels = None if endpoint is None else state.labels_of(endpoint)
        seen = self._seen.get(key)
        if seen is not None:
            if endpoint is not None and seen[1] == endpoint.addresses \
                    and seen[0].labels == frozenset(labels.items()):
                return  # evaluated as it is: nothing moves
            self._release(key, *seen)
        if endpoint is None:
            return
        label_set = self._label_set(labels)
        label_set.holders += 1
        self._seen[key] = (label_set, endpoint.addresses)
        for selector in label_set.hits:
            self._count(selector, endpoint.addresses, 1)

    def relabelled(self, state: PolicyState, known=frozenset()) -> list[str]:
        """Endpoints evaluated before, and not in `known` (changed anyway),
        whose label set (own plus inherited) is not the one they were
        evaluated with: after a profile's labelsToApply changed.  (Those
        not evaluated yet are update()'s or set_selectors'.)"""
        relabelled = []
        for key, (label_set, _) in self._seen.items():
            if key in known:
                continue
            endpoint = state.endpoints.get(key)  # None: deleted, not updated yet
            if endpoint is None or \
                    label_set.labels != frozenset(state.labels_of(endpoint).items()):
                relabelled.append(key)
        return relabelled

    def _label_set(self, labels: dict) -> _LabelSet:
        key = frozenset(labels.items())
        label_set = self._label_sets.get(key)
        if label_set is None:
            label_set = self._label_sets[key] = _LabelSet(
                key, frozenset(s for s in self._counts if s.evaluate(labels)))
        return label_set

    def _release(self, key: str, label_set: _LabelSet, addresses: tuple[str, ...]) -> None:
        del self._seen[key]
        for selector in label_set.hits:
            self._count(selector, addresses, -1)
        label_set.holders -= 1
        if not label_set.holders:
            del self._label_sets[label_set.labels]

    def _count(self, selector: Selector, addresses: tuple[str, ...], step: int) -> None:
        """One more (step 1) or one fewer (-1) endpoint of the selector's
        holds these addresses; an address is gained or lost when its count
        leaves or reaches 0."""
        counts = self._counts[selector]
        if selector not in self._moved:
            self._moved[selector] = (set(), set())
        moved = self._moved[selector]
        for address in addresses:
            count = counts[address] + step
            if count > 0:
                counts[address] = count
            else:
                counts.pop(address, None)
            if moved is not None and count == (step > 0):  # 1 when gained, 0 when lost
                gained, lost = moved if step > 0 else moved[::-1]
                if address in lost:
                    lost.discard(address)  # lost and gained back since last asked
                else:
                    gained.add(address)
