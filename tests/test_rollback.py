"""``volfs volume rollback``: a past snapshot's content becomes the head as a new commit,
and nothing in between is lost; ``volfs volume retention`` and its refusals."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Callable

import pytest
from cli_checks import files, ok, refused

from volfs import Volume
from volfs.errors import InvalidError, NotFoundError
from volfs.maintenance.fsck import fsck
from volfs.maintenance.gc import collect
from volfs.snapshots import history
from volfs.store import Store


def put(vol: Volume, path: str, data: bytes) -> None:
    with vol.batch_upload(force=True) as batch:
        batch.put_file(io.BytesIO(data), path)


@pytest.fixture
def vol(store: Store) -> Volume:
    Volume.objects.create("vol", store=store)
    v = Volume.from_name("vol", store=store)
    put(v, "a.txt", b"first a")
    put(v, "keep/b.txt", b"b stays")
    return v


def test_rollback_restores_old_content_as_a_new_head_and_keeps_history(
    vol: Volume, store: Store
) -> None:
    target = vol.history()[0].id
    before = files(vol)
    put(vol, "a.txt", b"second a, longer")
    put(vol, "c.txt", b"added later")
    vol.remove_file("keep", recursive=True)
    overwritten = [s.id for s in vol.history()]
    out = ok("volume", "rollback", "vol", target)
    assert f"back to {target}" in out and f"previous head {overwritten[0]}" in out
    assert files(vol) == before
    log = json.loads(ok("volume", "log", "vol", "--json"))
    assert log[0]["origin"] == f"rollback to {target}" and log[0]["parent"] == overwritten[0]
    assert [e["id"] for e in log[1:]] == overwritten  # everything in between is still there
    assert {(c["op"], c["path"]) for c in log[0]["changed"]} == {
        ("put", "a.txt"),
        ("rm", "c.txt"),
        ("mkdir", "keep"),
        ("put", "keep/b.txt"),
    }
    undone = vol.snapshot(overwritten[0])  # the rolled-over head is still readable
    assert files(undone) == {"a.txt": b"second a, longer", "c.txt": b"added later"}
    root = store.catalog.head(vol.object_id).root
    assert root == store.catalog.get_snapshot(target).root  # a whole-tree replace, not a merge
    assert fsck(store).clean


def test_rolling_back_to_what_the_head_holds_makes_no_snapshot(vol: Volume) -> None:
    head = vol.history()[0].id
    out = ok("volume", "rollback", "vol", head)
    assert "Nothing to roll back" in out
    assert vol.history()[0].id == head


def test_rollback_retries_when_a_commit_lands_first(
    vol: Volume, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = vol.history()[-1].id  # the empty volume at creation
    real = store.catalog.rollback_head
    calls = []

    def racing(expected, snapshot, source):  # type: ignore[no-untyped-def]
        calls.append(expected)
        if len(calls) == 1:
            put(vol, "racer.txt", b"landed between the read and the swap")
        return real(expected, snapshot, source)

    monkeypatch.setattr(store.catalog, "rollback_head", racing)
    result = history.rollback(store.catalog, "vol", target)
    assert len(calls) == 2 and files(vol) == {}
    assert store.catalog.get_snapshot(result.snapshot).parent == vol.history()[1].id  # type: ignore[arg-type]
    assert vol.history()[1].origin == "api:put"  # the racer's commit is in history


def test_rollback_refusals_are_one_line_and_change_nothing(
    vol: Volume, store: Store, store_state: Callable[[], object]
) -> None:
    Volume.objects.create("other", store=store)
    other = Volume.from_name("other", store=store)
    foreign = other.history()[0].id
    before = store_state()
    assert refused("volume", "rollback", "missing", vol.history()[0].id).returncode == 3
    assert "not found" in refused("volume", "rollback", "vol", "sn-nosuchsnapshot").stderr
    assert refused("volume", "rollback", "vol", "../../etc").returncode == 3
    assert "does not belong" in refused("volume", "rollback", "vol", foreign).stderr
    assert store_state() == before
    with pytest.raises(NotFoundError):
        history.rollback(store.catalog, "vol", "")
    with pytest.raises(InvalidError):
        history.rollback(store.catalog, "vol", foreign)


def test_log_stops_gracefully_where_retention_dropped_history(vol: Volume, store: Store) -> None:
    put(vol, "a.txt", b"third")
    history.set_retention(store.catalog, "vol", keep_last=2)
    collect(store, grace=0)
    assert len(vol.history()) == 2 and vol.history()[-1].parent is not None
    text = ok("volume", "log", "vol")
    assert "dropped by retention" in text and "retention: keep last 2" in text
    assert "1 change" in ok("volume", "log", "vol", "-n", "1")


def test_retention_command_shows_sets_and_refuses(vol: Volume) -> None:
    assert "keep everything" in ok("volume", "retention", "vol")
    assert "keep last 5 / keep 7 days" in ok(
        "volume", "retention", "vol", "--keep-last", "5", "--keep-days", "7"
    )
    info = json.loads(ok("volume", "info", "vol", "--json"))
    assert info["retention"] == {"keep_last": 5, "keep_days": 7.0}
    assert json.loads(ok("volume", "retention", "vol", "--json"))["keep_last"] == 5
    assert "keep everything" in ok("volume", "retention", "vol", "--keep-all")
    assert json.loads(ok("volume", "info", "vol", "--json"))["retention"] is None
    assert refused("volume", "retention", "missing", "--keep-last", "3").returncode == 3
    for bad in (["--keep-last", "0"], ["--keep-days", "0"], ["--keep-all", "--keep-last", "2"]):
        proc = subprocess.run(
            [sys.executable, "-m", "volfs", "volume", "retention", "vol", *bad],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 2 and "Error: " in proc.stderr and "Traceback" not in proc.stderr
    assert "keep everything" in ok("volume", "retention", "vol")  # nothing changed
