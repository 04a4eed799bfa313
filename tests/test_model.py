"""Model-based test: three real mounts of one volume against a pure model of DESIGN §2.

A hypothesis ``RuleBasedStateMachine`` drives three mounts (started once for the module)
with write, append, truncate, delete, rename, mkdir, rmdir, commit and reload in random
order over a small alphabet of paths, and after every step compares each mount's view
(walked through FUSE) and the volume's head (read from the store) with the model:

- a mount's view is its base plus its own changes, with the errors a local POSIX
  filesystem gives (ENOENT, ENOTDIR, EISDIR, EEXIST, ENOTEMPTY, EINVAL), and is private
  until committed;
- a commit merges what the mount changed since its last commit onto the current head,
  path by path: a file it wrote replaces head's entry; a path it deleted goes, even if
  changed since; a directory it removed keeps what others added; a directory it created
  where head has one merges into it; untouched paths keep head's version; the committing
  mount's view does not change;
- a reload commits, then the view becomes the head.

The model is written from the contract, not from merge.py. Trees are nested dicts:
name -> bytes (a file) or dict (a directory).

Between examples the mounts are reset to an empty volume: reload each, empty one and
commit, reload the others (a fresh volume per example would cost three mounts).
The number of steps run is printed (pytest ``-s``).
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Union

import pytest
from conftest_campaign import (
    DIR,
    FULL,
    Content,
    describe_diff,
    mounts,
    read_local,
    read_tree,
    summary,
)
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from mounting import Mount, run_volfs

from volfs import control
from volfs.store import Store

pytestmark = pytest.mark.mount

MOUNTS = 3
NAMES = ["a", "b", "c"]
Node = Union[bytes, "Tree"]
Tree = dict[str, Any]  # name -> Node


class ModelError(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(errno.errorcode[code])
        self.errno = code


# -- the pure model --------------------------------------------------------------------------------
def flatten(tree: Tree, prefix: str = "") -> dict[str, Content]:
    out: dict[str, Content] = {}
    for name, node in tree.items():
        path = prefix + name
        if isinstance(node, dict):
            out[path] = DIR
            out.update(flatten(node, path + "/"))
        else:
            out[path] = node
    return out


def copy(tree: Tree) -> Tree:
    return {n: copy(c) if isinstance(c, dict) else c for n, c in tree.items()}


def parent_of(tree: Tree, parts: tuple[str, ...]) -> Tree:
    """The directory holding ``parts[-1]``, or the error resolving it gives."""
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            raise ModelError(errno.ENOENT)
        if not isinstance(child, dict):
            raise ModelError(errno.ENOTDIR)
        node = child
    return node


def model_open_write(tree: Tree, parts: tuple[str, ...], data: bytes, append: bool) -> None:
    parent = parent_of(tree, parts)
    old = parent.get(parts[-1])
    if isinstance(old, dict):
        raise ModelError(errno.EISDIR)
    parent[parts[-1]] = (old or b"") + data if append else data


def model_truncate(tree: Tree, parts: tuple[str, ...], size: int) -> None:
    parent = parent_of(tree, parts)
    old = parent.get(parts[-1])
    if old is None:
        raise ModelError(errno.ENOENT)
    if isinstance(old, dict):
        raise ModelError(errno.EISDIR)
    parent[parts[-1]] = old[:size] + b"\0" * max(0, size - len(old))


def model_unlink(tree: Tree, parts: tuple[str, ...]) -> None:
    parent = parent_of(tree, parts)
    old = parent.get(parts[-1])
    if old is None:
        raise ModelError(errno.ENOENT)
    if isinstance(old, dict):
        raise ModelError(errno.EISDIR)
    del parent[parts[-1]]


def model_mkdir(tree: Tree, parts: tuple[str, ...]) -> None:
    parent = parent_of(tree, parts)
    if parts[-1] in parent:
        raise ModelError(errno.EEXIST)
    parent[parts[-1]] = {}


def model_rmdir(tree: Tree, parts: tuple[str, ...]) -> None:
    parent = parent_of(tree, parts)
    old = parent.get(parts[-1])
    if old is None:
        raise ModelError(errno.ENOENT)
    if not isinstance(old, dict):
        raise ModelError(errno.ENOTDIR)
    if old:
        raise ModelError(errno.ENOTEMPTY)
    del parent[parts[-1]]


def _trap(old_parent: tuple[str, ...], new_parent: tuple[str, ...]) -> tuple[str, ...] | None:
    """The dentry the kernel's ``lock_rename`` guards: the child of the outer parent on the way
    to the inner one, when one parent contains the other."""
    if old_parent == new_parent:
        return None
    if new_parent[: len(old_parent)] == old_parent:
        return new_parent[: len(old_parent) + 1]
    if old_parent[: len(new_parent)] == new_parent:
        return old_parent[: len(new_parent) + 1]
    return None


def model_rename(tree: Tree, src: tuple[str, ...], dst: tuple[str, ...]) -> None:
    # The order of the kernel's checks (do_renameat2, vfs_rename), then the filesystem's.
    old_parent = parent_of(tree, src)
    new_parent = parent_of(tree, dst)
    node = old_parent.get(src[-1])
    if node is None:
        raise ModelError(errno.ENOENT)
    trap = _trap(src[:-1], dst[:-1])
    if trap is not None and trap == src:
        raise ModelError(errno.EINVAL)  # a directory into itself
    if trap is not None and trap == dst:
        raise ModelError(errno.ENOTEMPTY)  # onto one of its own ancestors
    if src == dst:
        return
    target = new_parent.get(dst[-1])
    if target is not None:
        if isinstance(node, dict) and not isinstance(target, dict):
            raise ModelError(errno.ENOTDIR)
        if not isinstance(node, dict) and isinstance(target, dict):
            raise ModelError(errno.EISDIR)
        if isinstance(target, dict) and target:
            raise ModelError(errno.ENOTEMPTY)
    del old_parent[src[-1]]
    new_parent[dst[-1]] = node


def merge_children(head: Tree, committed: Tree, view: Tree) -> Tree:
    """DESIGN §2's merge of one directory: what changed from ``committed`` to ``view``, onto
    ``head``. Every other name keeps head's version."""
    out = dict(head)
    for name in set(committed) | set(view):
        seen, mine, theirs = committed.get(name), view.get(name), head.get(name)
        if mine is None:
            if seen is None:
                continue
            kept = remove(theirs, seen)  # deleted, even if changed since
            if kept is None:
                out.pop(name, None)
            else:
                out[name] = kept
        elif not isinstance(mine, dict):
            if mine != seen:
                out[name] = mine  # a file written replaces whatever head has
        elif isinstance(seen, dict):
            if mine == seen:
                continue  # untouched
            if isinstance(theirs, dict):
                out[name] = merge_children(theirs, seen, mine)
            else:
                # Someone removed the directory (or put a file there): only what this
                # mount changed inside it comes back, and only if there is any.
                inside = merge_children({}, seen, mine)
                if inside:
                    out[name] = inside
        else:
            # A directory created here: merged into head's directory if it has one.
            out[name] = merge_children(theirs if isinstance(theirs, dict) else {}, {}, mine)
    return out


def remove(theirs: Node | None, seen: Node) -> Node | None:
    """What is left of head's ``theirs`` once the entry the mount saw there is removed."""
    if theirs is None:
        return None
    if not isinstance(theirs, dict):
        return theirs if isinstance(seen, dict) else None  # a file where it saw a dir: unseen
    seen_entries = seen if isinstance(seen, dict) else {}
    kept: Tree = {}
    for name, node in theirs.items():
        if name not in seen_entries:
            kept[name] = node  # added by others: survives
        elif (rest := remove(node, seen_entries[name])) is not None:
            kept[name] = rest
    return kept or None


# -- the real side ---------------------------------------------------------------------------------
class World:
    """The module's store and mounts, shared by every example."""

    def __init__(self, store_path: Path, running: list[Mount]) -> None:
        self.store_path = store_path
        self.store = Store.open(store_path)
        self.volume_id = self.store.catalog.get_volume("main", "model").id
        self.mounts = running
        self.sockets = [control.mount_info(str(m.path)).socket for m in running]
        self.steps = 0
        self.examples = 0

    def head(self) -> dict[str, Content]:
        return read_tree(self.store, self.store.catalog.get_volume("main", "model").head)

    def reset(self) -> None:
        for socket in self.sockets:
            control.call(socket, "reload", timeout=60)
        control.call(self.sockets[0], "reload", timeout=60)
        root = self.mounts[0].path
        for name in os.listdir(root):
            path = root / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        control.call(self.sockets[0], "commit", timeout=60)
        for socket in self.sockets[1:]:
            control.call(socket, "reload", timeout=60)
        assert self.head() == {}
        for m in self.mounts:
            assert os.listdir(m.path) == [], m.path


WORLD: World | None = None


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    global WORLD
    root = tmp_path_factory.mktemp("model")
    store_path = root / "store"
    run_volfs(store_path, "volume", "create", "model")
    with mounts(store_path, [("model", root / f"m{i}") for i in range(MOUNTS)]) as running:
        WORLD = World(store_path, running)
        try:
            yield WORLD
        finally:
            WORLD = None


paths = st.lists(st.sampled_from(NAMES), min_size=1, max_size=2).map(tuple)
mount_ids = st.integers(0, MOUNTS - 1)
contents = st.one_of(st.sampled_from([b"", b"x", b"hello", b"hello world"]), st.binary(max_size=64))


class VolumeMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        assert WORLD is not None
        self.world = WORLD
        self.world.reset()
        self.world.examples += 1
        self.head: Tree = {}
        self.views: list[Tree] = [{} for _ in range(MOUNTS)]
        self.committed: list[Tree] = [{} for _ in range(MOUNTS)]

    def real(self, m: int, parts: tuple[str, ...]) -> Path:
        return self.world.mounts[m].path.joinpath(*parts)

    def both(self, m: int, model_op: Any, real_op: Any, what: str) -> None:
        """Applies one operation to the model and to mount ``m``; both must agree on the error."""
        self.world.steps += 1
        expected = None
        trial = copy(self.views[m])
        try:
            model_op(trial)
        except ModelError as exc:
            expected = exc.errno
        else:
            self.views[m] = trial
        got = None
        try:
            real_op()
        except OSError as exc:
            got = exc.errno
        assert got == expected, (
            f"mount {m}: {what}: the mount gave {got and errno.errorcode[got]}, "
            f"the model {expected and errno.errorcode[expected]}"
        )

    @rule(m=mount_ids, p=paths, data=contents)
    def write(self, m: int, p: tuple[str, ...], data: bytes) -> None:
        self.both(
            m,
            lambda t: model_open_write(t, p, data, append=False),
            lambda: self.real(m, p).write_bytes(data),
            f"write {'/'.join(p)}",
        )

    @rule(m=mount_ids, p=paths, data=contents)
    def append(self, m: int, p: tuple[str, ...], data: bytes) -> None:
        def real() -> None:
            with open(self.real(m, p), "ab") as f:
                f.write(data)

        self.both(
            m, lambda t: model_open_write(t, p, data, append=True), real, f"append {'/'.join(p)}"
        )

    @rule(m=mount_ids, p=paths, size=st.integers(0, 80))
    def truncate(self, m: int, p: tuple[str, ...], size: int) -> None:
        self.both(
            m,
            lambda t: model_truncate(t, p, size),
            lambda: os.truncate(self.real(m, p), size),
            f"truncate {'/'.join(p)} {size}",
        )

    @rule(m=mount_ids, p=paths)
    def delete(self, m: int, p: tuple[str, ...]) -> None:
        self.both(
            m,
            lambda t: model_unlink(t, p),
            lambda: os.unlink(self.real(m, p)),
            f"unlink {'/'.join(p)}",
        )

    @rule(m=mount_ids, p=paths, q=paths)
    def rename(self, m: int, p: tuple[str, ...], q: tuple[str, ...]) -> None:
        self.both(
            m,
            lambda t: model_rename(t, p, q),
            lambda: os.rename(self.real(m, p), self.real(m, q)),
            f"rename {'/'.join(p)} {'/'.join(q)}",
        )

    @rule(m=mount_ids, p=paths)
    def mkdir(self, m: int, p: tuple[str, ...]) -> None:
        self.both(
            m,
            lambda t: model_mkdir(t, p),
            lambda: os.mkdir(self.real(m, p)),
            f"mkdir {'/'.join(p)}",
        )

    @rule(m=mount_ids, p=paths)
    def rmdir(self, m: int, p: tuple[str, ...]) -> None:
        self.both(
            m,
            lambda t: model_rmdir(t, p),
            lambda: os.rmdir(self.real(m, p)),
            f"rmdir {'/'.join(p)}",
        )

    def _commit_model(self, m: int) -> None:
        self.head = merge_children(self.head, self.committed[m], self.views[m])
        self.committed[m] = copy(self.views[m])

    @rule(m=mount_ids)
    def commit(self, m: int) -> None:
        self.world.steps += 1
        self._commit_model(m)
        control.call(self.world.sockets[m], "commit", timeout=60)

    @rule(m=mount_ids)
    def reload(self, m: int) -> None:
        self.world.steps += 1
        self._commit_model(m)
        self.views[m] = copy(self.head)
        self.committed[m] = copy(self.head)
        control.call(self.world.sockets[m], "reload", timeout=60)

    @invariant()
    def views_and_head_match_the_model(self) -> None:
        for m in range(MOUNTS):
            expected = flatten(self.views[m])
            got = read_local(self.world.mounts[m].path)
            assert got == expected, f"mount {m}'s view:\n{describe_diff(expected, got)}"
        expected = flatten(self.head)
        got = self.world.head()
        assert got == expected, f"the head:\n{describe_diff(expected, got)}"


@pytest.mark.timeout(900 if FULL else 240)
def test_three_mounts_follow_the_model(world: World) -> None:
    run_state_machine_as_test(
        VolumeMachine,
        settings=settings(
            max_examples=800 if FULL else 250,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            print_blob=True,
        ),
    )
    summary(
        f"MODEL: {world.steps} steps in {world.examples} examples on {MOUNTS} real mounts, "
        "every mount's view and the head checked after each step"
    )


# -- the model itself, against the kernel and the design -------------------------------------------
def test_the_model_gives_the_errors_of_a_local_filesystem(tmp_path: Path) -> None:
    """The per-mount rules are POSIX's: replay random operations on a local directory."""
    import random

    rng = random.Random(7)
    for trial in range(30):
        root = tmp_path / f"t{trial}"
        root.mkdir()
        tree: Tree = {}
        for _ in range(60):
            op = rng.choice(["write", "append", "truncate", "unlink", "rename", "mkdir", "rmdir"])
            p = tuple(rng.choice(NAMES) for _ in range(rng.randint(1, 2)))
            q = tuple(rng.choice(NAMES) for _ in range(rng.randint(1, 2)))
            data = rng.choice([b"", b"x", b"yy"])
            model_ops = {
                "write": lambda t: model_open_write(t, p, data, False),
                "append": lambda t: model_open_write(t, p, data, True),
                "truncate": lambda t: model_truncate(t, p, 3),
                "unlink": lambda t: model_unlink(t, p),
                "rename": lambda t: model_rename(t, p, q),
                "mkdir": lambda t: model_mkdir(t, p),
                "rmdir": lambda t: model_rmdir(t, p),
            }
            real = root.joinpath(*p)

            def do_append() -> None:
                with open(real, "ab") as f:
                    f.write(data)

            real_ops = {
                "write": lambda: real.write_bytes(data),
                "append": do_append,
                "truncate": lambda: os.truncate(real, 3),
                "unlink": lambda: os.unlink(real),
                "rename": lambda: os.rename(real, root.joinpath(*q)),
                "mkdir": lambda: os.mkdir(real),
                "rmdir": lambda: os.rmdir(real),
            }
            expected = got = None
            trial_tree = copy(tree)
            try:
                model_ops[op](trial_tree)
                tree = trial_tree
            except ModelError as exc:
                expected = exc.errno
            try:
                real_ops[op]()
            except OSError as exc:
                got = exc.errno
            assert got == expected, (op, p, q)
            assert read_local(root) == flatten(tree), (op, p, q)


def test_the_model_merge_follows_design() -> None:
    base: Tree = {"d": {"old": b"1"}, "f": b"v1", "keep": b"k"}
    # A file written replaces head's; untouched paths keep head's version.
    assert merge_children({**base, "keep": b"k2"}, base, {**base, "f": b"mine"}) == {
        "d": {"old": b"1"},
        "f": b"mine",
        "keep": b"k2",
    }
    # A delete wins over a change made meanwhile.
    assert "f" not in merge_children(
        {**base, "f": b"theirs"}, base, {"d": {"old": b"1"}, "keep": b"k"}
    )
    # A removed directory keeps what others added.
    assert merge_children(
        {**base, "d": {"old": b"1", "new": b"2"}}, base, {"f": b"v1", "keep": b"k"}
    ) == {"d": {"new": b"2"}, "f": b"v1", "keep": b"k"}
    # A rename: delete at the old path, write at the new.
    assert merge_children(base, base, {"d": {"old": b"1"}, "g": b"v1", "keep": b"k"}) == {
        "d": {"old": b"1"},
        "g": b"v1",
        "keep": b"k",
    }
    # Directories created in two places merge.
    assert merge_children({"n": {"x": b"1"}}, {}, {"n": {"y": b"2"}}) == {
        "n": {"x": b"1", "y": b"2"}
    }
