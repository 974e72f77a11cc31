"""An immutable mapping that is cheap to copy with a few keys changed.

The responder reads the name table without locks, so a published table
never changes and each watch batch publishes a changed copy.  Copying one
dict of every endpoint's entries cost the whole cluster per change; split
into SHARDS dicts by key hash, a copy shares every shard it does not touch.
"""

SHARDS = 256  # a power of two; 30,000 endpoints leave ~120 keys a shard
_EMPTY: dict = {}  # never written: updated() writes only its own copies


class ShardedMap:
    __slots__ = ("_shards",)

    def __init__(self, shards: tuple[dict, ...] = (_EMPTY,) * SHARDS):
        self._shards = shards

    def get(self, key, default=None):
        return self._shards[hash(key) & (SHARDS - 1)].get(key, default)

    def updated(self, changes: dict) -> "ShardedMap":
        """A copy with `changes` made (a value of None removes its key);
        only the shards they fall in are copied."""
        shards, copied = list(self._shards), set()
        for key, value in changes.items():
            i = hash(key) & (SHARDS - 1)
            if i not in copied:
                shards[i] = dict(shards[i])
                copied.add(i)
            if value is None:
                shards[i].pop(key, None)
            else:
                shards[i][key] = value
        return ShardedMap(tuple(shards))
