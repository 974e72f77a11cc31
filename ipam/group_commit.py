"""Group commit: every write this process makes to one block goes through
that block's BlockWriter.

Docker asks for and gives back addresses from many threads at once (a
burst of `docker run`s).  Each request writing the node's block by itself
loses most compare-and-swaps against the others and retries (8 requests in
parallel: ~3 lost writes per address).  Instead requests queue up; one of
them, the leader, applies every queued change to its copy of the block and
writes the block once, in the same etcd transaction as the handles the
changes create and delete, then hands the lead to the next waiting request.
A compare that still fails (another host, or the CLI, wrote the block)
brings the block back with the answer, and the batch is applied again.
A batch that writes nothing (an address in use, a full block, nothing to
free) has no compare to catch a stale copy, so before that answer stands
the block is read and the batch applied again: one read, on that path only.

An address and its handle are written together, so a kill -9 at any moment
leaves both or neither.
"""

import threading
from collections.abc import Callable
from typing import Any

from netaddr import IPNetwork

from datastore.bounded import BoundedDict
from datastore.etcd import Etcd
from datastore.retry import attempts
from ipam import handles
from ipam.blocks import AllocationBlock, Release, block_key, handle_key, handle_value

_HANDLES_KEPT = 65536  # handles whose revision we remember, for one-transaction releases


class BlockGone(Exception):
    """The block does not exist (any more)."""


class HandleExists(Exception):
    """The change would create a handle that already exists: the caller
    counts it up the classic way."""


class KnownHandles:
    """The handles this process created and nobody changed since, with their
    revision: releasing their address deletes them in the block's transaction
    instead of reading them first."""

    def __init__(self):
        self._known = BoundedDict(_HANDLES_KEPT)  # id -> (block CIDR text, addresses, revision)

    def add(self, handle_id: str, cidr: IPNetwork, num: int, revision: int) -> None:
        self._known.put(handle_id, (str(cidr), num, revision))

    def take(self, handle_id: str, cidr: IPNetwork, num: int) -> int | None:
        """The revision to delete the handle at, when releasing num addresses
        in cidr frees all it holds; the handle is forgotten either way."""
        known = self._known.pop(handle_id)
        return known[2] if known and known[:2] == (str(cidr), num) else None

    def forget(self, handle_id: str) -> None:
        self._known.pop(handle_id)


class _Change:
    def __init__(self, edit: Callable[[AllocationBlock], Any], new_handle: str | None):
        self.edit = edit  # mutates the block; returns the caller's result or raises
        self.new_handle = new_handle  # the handle the assigned addresses carry
        self.result = self.error = None
        self.revision = 0  # of the block the result was written to (or read from)
        self.count_down = []  # (handle id, addresses) freed but not deleted in the commit
        self.finished = False
        self.wake = threading.Event()


class BlockWriter:
    def __init__(self, etcd: Etcd, cidr: IPNetwork, known: KnownHandles):
        self.etcd = etcd
        self.cidr = cidr
        self.key = block_key(cidr)
        self.known = known
        self._block: AllocationBlock | None = None  # our copy; None: read it first
        self._revision = 0
        self._lock = threading.Lock()
        self._queue: list[_Change] = []
        self._leading = False

    def seed(self, block: AllocationBlock, revision: int | None) -> None:
        """A copy of the block as this process just read or wrote it (None
        revision: deleted).  Kept when newer than ours and not in use."""
        with self._lock:
            if revision is None:
                self._block, self._revision = None, 0
            elif revision > self._revision or (self._block is None
                                               and revision == self._revision):
                self._block, self._revision = block, revision

    def run(self, edit: Callable[[AllocationBlock], Any], new_handle: str | None = None):
        """edit(block) in the next group write; (its result, the block's
        revision) once written.

        edit must only change the block, and be safe to run again on a
        fresher copy.  Raises what edit raised, BlockGone, HandleExists
        (new_handle is already stored), or the datastore's error."""
        change = _Change(edit, new_handle)
        with self._lock:
            self._queue.append(change)
            lead = not self._leading
            self._leading = True
        if not lead:
            change.wake.wait()
        if not change.finished:  # we lead (from the start, or handed the lead)
            with self._lock:
                batch, self._queue = self._queue, []
            try:
                self._write(batch)
            finally:
                with self._lock:
                    if self._queue:
                        self._queue[0].wake.set()
                    else:
                        self._leading = False
        if change.error is not None:
            raise change.error
        for handle_id, num in change.count_down:  # by the request that freed them
            handles.decrement(self.etcd, handle_id, self.cidr, num)
        return change.result, change.revision

    # -- the leader's work ------------------------------------------------

    def _write(self, batch: list[_Change]) -> None:
        with self._lock:
            block, revision, self._block = self._block, self._revision, None
        ours = block is not None  # our copy: another host may have changed the block since
        try:
            for _ in attempts(f"writing block {self.cidr}"):
                if block is None:
                    found = self.etcd.get(self.key)
                    if found is None:
                        return self._finish(batch, 0, error=BlockGone(str(self.cidr)))
                    block, revision = AllocationBlock.from_json(found.value), found.mod_revision
                live = [c for c in batch if not c.finished]
                if not live:
                    return self.seed(block, revision)
                before = block.to_json()
                commit = self._commit(block, revision, live, before)
                if commit is None and ours:
                    # Nothing to write: a refusal (in use, full, another node's
                    # block) or nothing to free.  No compare checked our copy,
                    # so check it against etcd before that answer stands.
                    block, ours = None, False
                    continue
                if commit is None:
                    self._finish(live, revision)
                    return self.seed(block, revision)
                if commit:
                    self._finish(live, commit.revision)
                    self.seed(block, None if _deleted(block) else commit.revision)
                    return
                fresh, ours = commit.reads[self.key], False
                block, revision = (None, 0) if fresh is None else \
                    (AllocationBlock.from_json(fresh.value), fresh.mod_revision)
                for change in live:
                    if change.new_handle and commit.reads.get(handle_key(change.new_handle)):
                        self._finish([change], 0, error=HandleExists(change.new_handle))
        except BaseException as exc:  # etcd down, or out of retries: tell every waiter
            self._finish([c for c in batch if not c.finished], 0, error=exc)
            raise

    def _commit(self, block, revision, live, before: str):
        """Apply live changes to block and write it with their handles; the
        commit (None: the block did not change)."""
        creates, deletes, created, taken = [], [], [], []
        for change in live:
            change.error, change.count_down = None, []
            try:
                change.result = change.edit(block)
            except Exception as exc:  # noqa: BLE001 - the change's own answer, e.g. in use
                change.result, change.error = None, exc
                continue
            if change.new_handle and isinstance(change.result, list) and change.result:
                num = len(change.result)
                creates.append((handle_key(change.new_handle),
                                handle_value({str(self.cidr): num})))
                created.append((change.new_handle, num))
            elif isinstance(change.result, Release):
                for handle_id, num in change.result.by_handle.items():
                    handle_revision = self.known.take(handle_id, self.cidr, num)
                    if handle_revision is None:
                        change.count_down.append((handle_id, num))
                    else:
                        deletes.append((handle_key(handle_id), handle_revision))
                        taken.append((handle_id, num, handle_revision))
        if not (creates or deletes) and block.to_json() == before:
            return None
        if _deleted(block):
            updates, deletes = [], deletes + [(self.key, revision)]
        else:
            updates = [(self.key, block.to_json(), revision)]
        read_back = list(dict.fromkeys([self.key] + [k for k, _ in creates + deletes]))
        commit = self.etcd.commit(creates, updates, deletes, read_back)
        if commit:
            for handle_id, num in created:
                self.known.add(handle_id, self.cidr, num, commit.revision)
        else:  # handles nobody changed stay known for the retry
            for handle_id, num, handle_revision in taken:
                now = commit.reads.get(handle_key(handle_id))
                if now is not None and now.mod_revision == handle_revision:
                    self.known.add(handle_id, self.cidr, num, handle_revision)
        return commit

    def _finish(self, changes, revision: int, error=None) -> None:
        for change in changes:
            if error is not None:
                change.error = error
            change.revision = revision
            change.finished = True
            change.wake.set()


def _deleted(block: AllocationBlock) -> bool:
    """An empty block affine to no host belongs to nobody: it is deleted."""
    return block.empty and block.affinity is None

