"""Resources.modify (read-modify-write with compare-and-swap) and apply,
against a real etcd."""

import pytest

from datastore.errors import DatastoreError, ResourceNotFound, TooManyConflicts
from datastore.resources import Resource


def profile(**spec):
    return Resource(kind="Profile", name="p1", spec=dict(spec))


def test_mutate_in_place_is_written_keeping_the_rest(resources):
    stored = resources.create(profile(a=1))
    stored.labels["x"] = "y"
    stored = resources.update(stored)

    def add_b(res):
        res.spec["b"] = 2
        return res

    written = resources.modify("Profile", "p1", add_b)
    assert written.revision > stored.revision
    again = resources.get("Profile", "p1")
    assert again.spec == {"a": 1, "b": 2}
    assert again.labels == {"x": "y"}
    assert again.metadata["uid"] == stored.metadata["uid"]
    assert again.revision == written.revision


def test_mutate_may_return_a_new_resource(resources):
    resources.create(profile(a=1))
    written = resources.modify("Profile", "p1", lambda res: profile(c=3))
    assert resources.get("Profile", "p1").spec == {"c": 3}
    assert written.spec == {"c": 3}


def test_none_from_mutate_writes_nothing(resources):
    stored = resources.create(profile(a=1))
    result = resources.modify("Profile", "p1", lambda res: None)
    assert result.revision == stored.revision == resources.get("Profile", "p1").revision
    assert result.spec == {"a": 1}


def test_missing_resource_is_created_by_create(resources):
    def never(res):
        raise AssertionError("mutate called for a missing resource")

    created = resources.modify("Profile", "p1", never, create=lambda: profile(a=1))
    stored = resources.get("Profile", "p1")
    assert stored.spec == {"a": 1} and stored.revision == created.revision
    assert stored.metadata["uid"] and stored.metadata["creationTimestamp"]


def test_missing_resource_without_create_is_not_found(resources):
    with pytest.raises(ResourceNotFound, match="Profile p1 does not exist"):
        resources.modify("Profile", "p1", lambda res: res)
    with pytest.raises(ResourceNotFound, match="WorkloadEndpoint ns/w1 does not exist"):
        resources.modify("WorkloadEndpoint", "w1", lambda res: res, namespace="ns")
    assert resources.get("Profile", "p1") is None


def test_lost_compare_rereads_and_mutates_again(resources):
    resources.create(profile(n=0))
    seen = []

    def increment(res):
        seen.append(res.spec["n"])
        if len(seen) == 1:  # another writer changes it between our read and write
            other = resources.get("Profile", "p1")
            other.spec["n"] = 10
            resources.update(other)
        res.spec["n"] += 1
        return res

    resources.modify("Profile", "p1", increment)
    assert seen == [0, 10]
    assert resources.get("Profile", "p1").spec == {"n": 11}


def test_lost_create_rereads_and_mutates(resources):
    def create_first():
        resources.create(profile(by="other"))  # another writer wins the create
        return profile(by="us")

    def mark(res):
        res.spec["seen"] = True
        return res

    resources.modify("Profile", "p1", mark, create=create_first)
    assert resources.get("Profile", "p1").spec == {"by": "other", "seen": True}


def test_deleted_while_mutating_is_created_again_or_not_found(resources):
    def delete_then_change(res):
        resources.delete("Profile", "p1")
        res.spec["b"] = 2
        return res

    resources.create(profile(a=1))
    resources.modify("Profile", "p1", delete_then_change, create=lambda: profile(new=1))
    assert resources.get("Profile", "p1").spec == {"new": 1}

    with pytest.raises(ResourceNotFound):
        resources.modify("Profile", "p1", delete_then_change)
    assert resources.get("Profile", "p1") is None


def test_too_many_conflicts_is_a_typed_datastore_error(resources):
    resources.create(profile(n=0))
    calls = []

    def always_overtaken(res):
        calls.append(1)
        other = resources.get("Profile", "p1")
        other.spec["n"] += 1
        resources.update(other)
        res.spec["mine"] = True
        return res

    with pytest.raises(TooManyConflicts) as err:
        resources.modify("Profile", "p1", always_overtaken, retries=3)
    assert isinstance(err.value, DatastoreError)
    assert "changing Profile p1 after 3 attempts" in str(err.value)
    assert len(calls) == 3
    assert resources.get("Profile", "p1").spec == {"n": 3}


def test_apply_creates_then_replaces_keeping_identity(resources):
    first = resources.apply(profile(a=1))
    second = resources.apply(profile(b=2))
    stored = resources.get("Profile", "p1")
    assert stored.spec == {"b": 2} and stored.revision == second.revision > first.revision
    assert stored.metadata["uid"] == first.metadata["uid"]
    assert stored.metadata["creationTimestamp"] == first.metadata["creationTimestamp"]
    # An identical apply still writes, as before.
    assert resources.apply(profile(b=2)).revision > second.revision
