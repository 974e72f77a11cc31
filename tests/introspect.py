"""What the tests read of the product's insides and the product itself never
needs: a selector's tokens and label keys, the selectors a policy's rules use,
the selectors a Membership tracks, a one-shot compile of a node's chains,
whether the name interception's table is in the kernel, and one etcd key fed
to a view as the follower feeds it.  Kept here so the
product carries no code only its tests call."""

from agent.names.intercept import Interception
from agent.policy.compiler import Chains, Compiler
from agent.policy.membership import Membership
from agent.policy.state import PolicyState
from datastore import selector as _selector
from datastore.policy import EntityRule, GlobalNetworkPolicy, Profile, Rule
from datastore.records import parse
from datastore.selector import Selector


def tokenize(text: str) -> list[tuple[str, str, int]]:
    """Calico's tokens for `text` as (kind, value, offset), ending with EOF;
    SelectorError as the parser raises it (for the port of tokenizer_test.go)."""
    try:
        return _selector._tokenize(text)
    except _selector._Failure as exc:
        raise _selector._error(text, exc.why, exc.pos) from None


def label_keys(selector: Selector) -> frozenset[str]:
    """Every label key the selector reads."""
    keys, todo = set(), [selector._root]
    while todo:
        node = todo.pop()
        if hasattr(node, "key"):
            keys.add(node.key)
        if hasattr(node, "operand"):
            todo.append(node.operand)
        todo.extend(getattr(node, "operands", ()))
    return frozenset(keys)


def rule_selectors(rule: Rule | EntityRule) -> set[Selector]:
    """The selector and notSelector of an entity rule, or of both sides of a rule."""
    if isinstance(rule, Rule):
        return rule_selectors(rule.source) | rule_selectors(rule.destination)
    return {s for s in (rule.selector, rule.not_selector) if s is not None}


def selectors_of(obj: Profile | GlobalNetworkPolicy) -> set[Selector]:
    """Every selector obj's rules use (not the policy's own selector, which
    picks endpoints rather than addresses)."""
    found = set()
    for rule in obj.ingress + obj.egress:
        found |= rule_selectors(rule)
    return found


def tracked_selectors(membership: Membership) -> set[Selector]:
    return set(membership._counts)


def compile_chains(state: PolicyState, node: str, host_addresses=None) -> Chains:
    return Compiler(node).compile(state, host_addresses)


def interception_present(interception: Interception) -> bool:
    """Whether the interception's table is in the kernel."""
    with interception._lock:
        return interception._present()


def feed(view, key: str, value: bytes | None, revision: int = 0):
    """Hand one etcd key to a view as the follower does (the record parsed
    by the kind whose prefix holds it): the view's answer, or False when it
    subscribes to no kind holding the key."""
    kind = next((k for k in view.kinds if key.startswith(k.prefix)), None)
    return False if kind is None else view.on_change(kind, key, parse(kind, key, value, revision))
