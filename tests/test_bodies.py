import gzip
import hashlib
import stat

from auditor.session.bodies import BodyStore


def test_put_get_dedup_and_modes(tmp_path) -> None:
    store = BodyStore(tmp_path / "bodies", cap=1000)
    a = store.put(b"hello")
    b = store.put(b"hello")
    assert a == b and a.sha256 == hashlib.sha256(b"hello").hexdigest()
    files = list((tmp_path / "bodies").iterdir())
    assert len(files) == 1 and files[0].name == f"{a.sha256}.zst"
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert store.get(a.sha256) == b"hello"


def test_encoded_body_kept_as_on_the_wire(tmp_path) -> None:
    store = BodyStore(tmp_path, cap=10**6)
    wire = gzip.compress(b"x" * 5000)
    ref = store.put(wire, "gzip")
    assert store.get(ref.sha256) == wire
    assert ref.wire_size == len(wire) and ref.decoded_size == 5000 and ref.encoding == "gzip"
    assert store.decoded(ref).data == b"x" * 5000


def test_over_cap_is_truncated_and_flagged(tmp_path) -> None:
    store = BodyStore(tmp_path, cap=100)
    raw = bytes(range(256)) * 4
    ref = store.put(raw)
    assert ref.truncated and ref.size == 100 and ref.wire_size == len(raw)
    assert ref.full_sha256 == hashlib.sha256(raw).hexdigest()
    assert store.get(ref.sha256) == raw[:100]


def test_invalid_encoding_is_recorded(tmp_path) -> None:
    ref = BodyStore(tmp_path).put(b"not gzip at all", "gzip")
    assert ref.decode_error and ref.decoded_size is not None


def test_a_fifo_in_place_of_a_body_is_unreadable_not_a_hang(tmp_path) -> None:
    import os

    import pytest

    from auditor.session.bodies import BodyUnreadable

    store = BodyStore(tmp_path, cap=1000)
    ref = store.put(b"hello")
    path = store.path(ref.sha256)
    path.unlink()
    os.mkfifo(path)  # nobody writes: reading it would block forever
    with pytest.raises(BodyUnreadable, match="not readable"):
        store.get(ref.sha256)
