"""Typed datastore errors; each message is meant for the user."""


class DatastoreError(Exception):
    """Base of every error raised by datastore/."""


class DatastoreUnavailable(DatastoreError):
    """etcd could not be reached (or timed out) on any configured endpoint."""


class EtcdTlsError(DatastoreUnavailable):
    """TLS with etcd failed: a certificate, key or CA file to fix (the
    message names the file and its variable), not an outage to wait out."""


class QuorumLost(DatastoreUnavailable):
    """The etcd members that answer have no leader: the cluster lost its
    quorum (or is electing a leader for longer than a request waits)."""


class RevisionCompacted(DatastoreUnavailable):
    """A watch asked for a revision that etcd has compacted away."""

    def __init__(self, compacted_revision):
        super().__init__(f"watch revision compacted (now {compacted_revision})")
        self.compacted_revision = compacted_revision


class ResourceNotFound(DatastoreError):
    pass


class ResourceAlreadyExists(DatastoreError):
    pass


class ResourceConflict(DatastoreError):
    """A compare-and-swap lost against a concurrent writer."""


class TooManyConflicts(DatastoreError):
    """Compare-and-swap writes kept losing against other writers, on every
    attempt datastore.retry allows."""


class WatchStalled(DatastoreError):
    """A watch saw nothing for longer than its inactivity timeout."""
