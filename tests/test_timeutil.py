import pytest

from auditor.timeutil import iso, parse_duration, parse_iso


def test_iso_round_trip() -> None:
    assert iso(0) == "1970-01-01T00:00:00.000000Z"
    assert parse_iso(iso(1700000000.25)) == pytest.approx(1700000000.25)
    assert iso(None) is None


@pytest.mark.parametrize(
    "text,seconds",
    [("45s", 45), ("5m", 300), ("1h", 3600), ("1m30s", 90), ("90", 90), ("250ms", 0.25)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "5x", "m5", "-3", "5 m s"])
def test_bad_durations(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)
