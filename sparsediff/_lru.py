"""A small thread-safe least-recently-used cache (the glue modules' solvers)."""

import collections
import threading

__all__ = ["LRUCache"]


class LRUCache:
    """At most ``maxsize`` entries; the least recently used one leaves first.

    ``maxsize`` may be changed at any time; it takes effect at the next
    insertion. Values are never ``None`` (``get`` returns ``None`` for a
    missing key).
    """

    def __init__(self, maxsize):
        self.maxsize = maxsize
        self._lock = threading.Lock()
        self._items = collections.OrderedDict()

    def get(self, key):
        """The value under ``key`` (now the most recent), or ``None``."""
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key, value):
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)

    def get_or_build(self, key, build):
        """The value under ``key``; if missing, ``build()`` (outside the lock,
        so a slow build does not block other lookups) is stored and returned."""
        value = self.get(key)
        if value is None:
            value = build()
            self.put(key, value)
        return value

    def clear(self):
        with self._lock:
            self._items.clear()
