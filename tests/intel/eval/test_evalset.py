"""The evaluation set is well formed, and the scorer counts as documented."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.intel.eval import evalset
from tests.intel.eval.evalset import HEADER, Row, load_rows, score


@pytest.fixture(scope="module")
def rows() -> list[Row]:
    return load_rows()


def test_header_is_exact() -> None:
    with evalset.DEFAULT_CSV.open(encoding="utf-8", newline="") as fh:
        assert tuple(next(csv.reader(fh))) == HEADER


def test_hosts_unique_normalised_and_valid(rows: list[Row]) -> None:
    hosts = [r.host for r in rows]
    assert len(hosts) == len(set(hosts))
    for host in hosts:
        assert host == evalset.normalise_host(host)
        assert evalset.is_valid_host(host), host
        assert "*" not in host


def test_every_source_is_defined(rows: list[Row]) -> None:
    defined = evalset.source_ids()
    assert {r.source_id for r in rows} <= defined


def test_every_defined_source_is_used(rows: list[Row]) -> None:
    assert evalset.source_ids() <= {r.source_id for r in rows}


def test_size_and_breadth(rows: list[Row]) -> None:
    assert len(rows) >= 300
    families = {r.family for r in rows} - {evalset.UNKNOWN}
    assert len(families) >= 20
    assert any(r.family == evalset.UNKNOWN for r in rows), "negative rows expected"


def test_quotes_are_short(rows: list[Row]) -> None:
    for r in rows:
        assert len(r.quote.split()) <= 25, r.host


def test_family_is_consistent_per_owner(rows: list[Row]) -> None:
    family_of: dict[str, str] = {}
    for r in rows:
        assert family_of.setdefault(r.owner, r.family) == r.family, r.owner


def _write(tmp_path: Path, lines: list[str], sources: str = "### `s1`\n") -> Path:
    (tmp_path / "SOURCES.md").write_text(sources, encoding="utf-8")
    path = tmp_path / "hosts.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GOOD = "a.example.com,acme,acme,Acme Inc.,s1,p. 1,a.example.com is ours"


def test_loader_accepts_a_good_file(tmp_path: Path) -> None:
    rows = load_rows(_write(tmp_path, [",".join(HEADER), GOOD]))
    assert rows == [
        Row("a.example.com", "acme", "acme", "Acme Inc.", "s1", "p. 1", "a.example.com is ours")
    ]


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["host,owner,family", GOOD], ":1: header"),
        ([",".join(HEADER), GOOD, GOOD], ":3: host 'a.example.com' already listed on line 2"),
        ([",".join(HEADER), GOOD.replace("a.example", "A.example")], ":2: host"),
        ([",".join(HEADER), GOOD.replace("a.example.com,", "*.example.com,", 1)], ":2: host"),
        ([",".join(HEADER), GOOD.replace(",s1,", ",s2,")], ":2: source_id 's2'"),
        ([",".join(HEADER), GOOD.replace(",acme,acme,", ",Acme,acme,")], ":2: owner"),
        ([",".join(HEADER), "a.example.com,acme,acme"], ":2: expected 7 fields"),
        ([",".join(HEADER), GOOD.replace(",acme,acme,", ",unknown,acme,")], ":2: owner and family"),
    ],
)
def test_loader_rejects(tmp_path: Path, lines: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        load_rows(_write(tmp_path, lines))


def _row(host: str, family: str) -> Row:
    owner = family
    return Row(host, owner, family, owner, "s", "w", "q")


HAND = [
    _row("a.google.com", "alphabet"),
    _row("b.google.com", "alphabet"),
    _row("c.xiaomi.com", "xiaomi"),
    _row("d.cloudfront.net", "unknown"),
    _row("e.cloudfront.net", "unknown"),
]


def test_score_counts() -> None:
    predictions = {
        "a.google.com": "alphabet",  # correct
        "b.google.com": "microsoft",  # wrong family
        "c.xiaomi.com": None,  # not named
        "d.cloudfront.net": "amazon",  # naming anybody on an unknown row is wrong
        "e.cloudfront.net": "unknown",  # same as None
    }
    result = score(HAND, predictions.get)
    assert (result.n, result.named, result.correct, result.wrong) == (5, 3, 1, 2)
    assert result.positives == 3
    assert result.recall == pytest.approx(1 / 3)
    assert result.wrong_rate == pytest.approx(2 / 3)
    assert [(m.row.host, m.predicted) for m in result.wrong_rows] == [
        ("b.google.com", "microsoft"),
        ("d.cloudfront.net", "amazon"),
    ]
    alphabet = result.per_family["alphabet"]
    assert (alphabet.n, alphabet.named, alphabet.correct, alphabet.wrong) == (2, 2, 1, 1)
    unknown = result.per_family["unknown"]
    assert (unknown.n, unknown.named, unknown.correct, unknown.wrong) == (2, 1, 0, 1)
    assert result.per_family["xiaomi"].named == 0


def test_score_perfect_and_silent() -> None:
    truth = {r.host: (None if r.family == "unknown" else r.family) for r in HAND}
    perfect = score(HAND, truth.get)
    assert (perfect.recall, perfect.wrong_rate, perfect.wrong_rows) == (1.0, 0.0, ())
    silent = score(HAND, lambda host: None)
    assert (silent.named, silent.recall, silent.wrong_rate) == (0, 0.0, 0.0)


def test_score_on_the_real_set_with_an_oracle(rows: list[Row]) -> None:
    truth = {r.host: r.family for r in rows}
    result = score(rows, truth.get)
    assert (result.recall, result.wrong) == (1.0, 0)
    assert result.named == result.positives
