"""The journal through a commit: what a mount does while its commit is being published.

A commit builds its view on the loop, then merges it onto the head in a worker thread
while the loop goes on serving requests; a crash at any moment after must find every
change those requests made in the journal (``volfs recover`` replays it), as ext4's
journal keeps an unlink or rename that returned.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest

from volfs import Volume
from volfs.mount.inodes import ROOT_INO
from volfs.mount.journal import Journal
from volfs.mount.overlay import Overlay
from volfs.store import Store

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def overlay(store: Store) -> Iterator[Overlay]:
    Volume.objects.create("v", store=store)
    with Volume.from_name("v", store=store).batch_upload() as batch:
        for name in ("kept", "doomed", "moved", "opened"):
            batch.put_file(io.BytesIO(name.encode()), name)
    volume = store.catalog.get_volume("main", "v")
    overlay_dir = store.overlays_dir / "mo-journaltest"
    overlay_dir.mkdir()
    overlay = Overlay(store, volume, store.catalog.head(volume.id), overlay_dir)
    yield overlay
    overlay.close()


def _recovered(store: Store, overlay: Overlay) -> Overlay:
    """What ``volfs recover`` rebuilds from the journal, as if the daemon died now."""
    records = Journal.read(overlay.dir / "journal")
    view, base_id = Overlay.view_from_journal(records)
    again = Overlay(
        store, overlay.volume, store.catalog.get_snapshot(base_id), overlay.dir, view=view
    )
    again.replay(records[1:])
    return again


def _names(overlay: Overlay) -> dict[str, bytes]:
    out = {}
    for name, ino in sorted(overlay.children(overlay.table[ROOT_INO]).items()):
        node = overlay.table[ino]
        out[name] = b"<dir>" if node.children is not None or node.base else b""
        if not out[name]:
            out[name] = overlay.read(node, 0, 1 << 20)
    return out


def test_changes_made_while_a_commit_is_published_survive_a_crash_after_it(
    store: Store, overlay: Overlay
) -> None:
    new = overlay.create(ROOT_INO, "new", 0o644, 0, 0)
    overlay.open(new, write=True, truncate=False)
    overlay.write(new, 0, b"committed")
    overlay.release(new, write=True)
    pending = overlay.build_view(overlay.hash_files(overlay.prepare_commit()))
    # The loop serves these while the worker thread publishes the view built above.
    overlay.unlink(ROOT_INO, "doomed")
    overlay.rename(ROOT_INO, "moved", ROOT_INO, "renamed", 0)
    overlay.mkdir(ROOT_INO, "dir", 0o755, 0, 0)
    late = overlay.create(ROOT_INO, "late", 0o644, 0, 0)
    overlay.open(late, write=True, truncate=False)
    overlay.write(late, 0, b"late")
    overlay.release(late, write=True)
    opened = overlay.lookup(ROOT_INO, "opened")
    overlay.open(opened, write=True, truncate=False)  # copied up, then closed unchanged
    overlay.release(opened, write=True)
    overlay.publish(pending)
    overlay.finish_commit(pending)
    expected = _names(overlay)
    assert set(expected) == {"kept", "new", "renamed", "dir", "late", "opened"}
    again = _recovered(store, overlay)
    try:
        assert _names(again) == expected
    finally:
        again.close()
