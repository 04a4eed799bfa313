"""The names of a huge directory, loaded one at a time from its split tree.

A directory of up to ``SPLIT_ABOVE`` entries loads its whole listing on first use: one
node per entry (``view.py``). A split one (millions of entries, see ``core/tree.py``)
gets a :class:`Listing` instead: a mapping of name -> ino that makes a node only for the
names asked for (a lookup reads the one leaf holding the name), remembers the names
added and removed here, and gives a commit just those (:meth:`Listing.changes`), so a
lookup and a commit of one change cost a leaf, not the directory. Iterating it (readdir,
``rm -r``) loads the rest, as a small directory would.

No pyfuse3 and no trio; single-threaded (the trio loop), like the inode table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping

from volfs.core.tree import Entry, Tree

NodeMaker = Callable[[Entry], int]
"""Makes the node of a committed entry, named in the directory; returns its ino."""


class Listing(MutableMapping[str, int]):
    """Name -> ino of a directory committed as a split tree (module docstring)."""

    __slots__ = ("_added", "_count", "_loaded", "_make", "_removed", "complete", "tree")

    def __init__(self, make: NodeMaker, tree: Tree) -> None:
        self._make = make
        self.tree = tree
        #: The names with a node: asked for, or added here.
        self._loaded: dict[str, int] = {}
        #: Names of the tree removed here (not in ``_loaded``).
        self._removed: set[str] = set()
        #: Names added here that the tree does not have (all in ``_loaded``).
        self._added: set[str] = set()
        self._count = len(tree)
        #: Every name of the tree has a node (it was iterated): a plain listing now.
        self.complete = False

    @property
    def loaded(self) -> dict[str, int]:
        """The names that have a node, without loading any (what the kernel may hold)."""
        return self._loaded

    def _load(self, name: str, entry: Entry | None = None) -> int | None:
        if name in self._removed or self.complete:
            return None
        entry = entry or self.tree.get(name)
        if entry is None:
            return None
        ino = self._loaded[name] = self._make(entry)
        return ino

    def get(self, name: str, default: int | None = None) -> int | None:  # type: ignore[override]
        ino = self._loaded.get(name)
        if ino is None:
            ino = self._load(name)
        return default if ino is None else ino

    def node_of(self, name: str, entry: Entry | None, tree: Tree) -> int | None:
        """:meth:`get`, given the entry ``tree`` has for ``name`` (a readdir's cursor has
        it): no second search of the tree, unless the listing moved to another since."""
        ino = self._loaded.get(name)
        if ino is None and entry is not None and tree is self.tree:
            ino = self._load(name, entry)
        return ino if ino is not None else self.get(name)

    def __getitem__(self, name: str) -> int:
        ino = self.get(name)
        if ino is None:
            raise KeyError(name)
        return ino

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __setitem__(self, name: str, ino: int) -> None:
        if self.get(name) is None:
            self._count += 1
            if name in self._removed:  # the tree's name, back
                self._removed.discard(name)
            else:  # get() found it nowhere: not in the tree
                self._added.add(name)
        self._loaded[name] = ino

    def __delitem__(self, name: str) -> None:
        if self.get(name) is None:
            raise KeyError(name)
        del self._loaded[name]
        self._count -= 1
        if name in self._added:
            self._added.discard(name)
        else:
            self._removed.add(name)

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[str]:
        self.load_all()
        return iter(self._loaded)

    def load_all(self) -> None:
        """A node for every name (a readdir, an emptiness walk): the listing is whole."""
        if self.complete:
            return
        for entry in self.tree.iter_entries():
            name = entry.name
            if name not in self._loaded and name not in self._removed:
                self._loaded[name] = self._make(entry)
        self.complete = True

    def cursor(self) -> Cursor:
        """The names as they are now, to list in order without loading them (a readdir)."""
        return Cursor(self.tree, frozenset(self._removed), sorted(self._added))

    def changes(self) -> tuple[list[str], set[str]]:
        """(names with a node, names of the tree removed): what a commit must look at."""
        return list(self._loaded), self._removed

    def rebased(self, tree: Tree) -> None:
        """The directory now lists ``tree`` (a reload): the names loaded were reconciled
        with it by the caller, nothing is removed any more."""
        self.tree = tree
        self._removed = set()
        self._added = set()
        self._count = len(tree)
        self.complete = False


#: A readdir offset is (leaf << LEAF_BITS) + position in the leaf; the names added after.
LEAF_BITS = 32


class Cursor:
    """A huge directory's names at one moment, listed from any offset one leaf at a time:
    a readdir streams, holding one leaf, whatever the directory's size."""

    def __init__(self, tree: Tree, removed: frozenset[str], added: list[str]) -> None:
        self.tree, self.removed, self.added = tree, removed, added

    def names_from(self, offset: int) -> Iterator[tuple[int, str, Entry | None]]:
        """(the offset after it, name, its tree entry or None if added here) of every name
        from ``offset`` on."""
        tree = self.tree
        count = len(tree.leaves) if tree.leaves is not None else 1  # a flat tree: one leaf
        first, position = divmod(offset, 1 << LEAF_BITS)
        for i in range(first, count):
            entries = tree.leaf(i).entries if tree.leaves is not None else tree.entries
            for p in range(position if i == first else 0, len(entries)):
                entry = entries[p]
                if entry.name not in self.removed:
                    yield (i << LEAF_BITS) + p + 1, entry.name, entry
        start = count << LEAF_BITS
        for k in range(max(offset - start, 0), len(self.added)):
            yield start + k + 1, self.added[k], None


def loaded(children: MutableMapping[str, int]) -> MutableMapping[str, int]:
    """The children of a directory that have a node, loading none."""
    return children.loaded if isinstance(children, Listing) else children
