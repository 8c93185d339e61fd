import json
from pathlib import Path

import pytest

from auditor.device.journal import RestoreJournal, find_pending


def test_changes_are_undone_newest_first_and_only_once(tmp_path: Path) -> None:
    j = RestoreJournal(tmp_path / "restore.jsonl")
    a = j.record("S1", "set proxy", {"kind": "settings", "key": "http_proxy", "value": None})
    j.applied(a)
    b = j.record("S1", "reverse", {"kind": "reverse_remove", "remote": "tcp:8080"})
    j.applied(b)
    c = j.record("S1", "crashed before applied", {"kind": "noop"})
    seen: list[str] = []
    report = j.undo_all(lambda undo: seen.append(undo["kind"]))
    assert report.ok and seen == ["noop", "reverse_remove", "settings"]
    assert j.pending() == []
    again: list[str] = []
    assert j.undo_all(lambda undo: again.append(undo["kind"])).undone == []
    assert again == []
    assert [ch.id for ch in j.changes()] == [a, b, c]
    assert all(ch.undone for ch in j.changes())


def test_failed_undo_stays_pending_and_others_still_run(tmp_path: Path) -> None:
    j = RestoreJournal(tmp_path / "restore.jsonl")
    j.record("S1", "one", {"kind": "one"})
    j.record("S1", "two", {"kind": "two"})

    def undo(u: dict) -> None:
        if u["kind"] == "two":
            raise RuntimeError("device gone")

    report = j.undo_all(undo)
    assert not report.ok and [c.what for c in report.undone] == ["one"]
    assert [c.what for c in j.pending()] == ["two"]
    assert j.undo_all(lambda u: None).ok and j.pending() == []


def test_journal_survives_a_torn_line_and_filters_by_serial(tmp_path: Path) -> None:
    path = tmp_path / "s" / "restore.jsonl"
    path.parent.mkdir()
    j = RestoreJournal(path)
    j.record("A", "a", {"kind": "a"})
    j.record("B", "b", {"kind": "b"})
    with open(path, "ab") as fh:
        fh.write(b'{"op": "change", "id": 9, "undo": {"ki')
    assert [c.what for c in j.pending()] == ["b", "a"]
    assert find_pending(tmp_path, "A") == [path.parent]
    j.undo_all(lambda u: None, serial="A")
    assert find_pending(tmp_path, "A") == [] and find_pending(tmp_path, "B") == [path.parent]
    lines = [json.loads(x) for x in path.read_text().splitlines()[:2]]
    assert lines[0]["op"] == "change" and lines[0]["serial"] == "A"


def test_find_pending_on_missing_folder(tmp_path: Path) -> None:
    assert find_pending(tmp_path / "nope", "X") == []


@pytest.mark.parametrize("n", [50])
def test_ids_are_unique(tmp_path: Path, n: int) -> None:
    j = RestoreJournal(tmp_path / "r.jsonl")
    ids = [j.record("S", f"c{i}", {"kind": "k"}) for i in range(n)]
    assert ids == list(range(1, n + 1))
