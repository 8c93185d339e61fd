"""What the fuzz tests share: every parser that reads outside input is fed hostile input by
hypothesis.

The property is the same for each parser: it raises nothing but its documented error family,
it ends in bounded time (:data:`INPUT_SECONDS` per input) and, under ``scripts/fuzz``, in
bounded memory (an address-space limit turns a blow-up into a ``MemoryError``, which fails).

A test is written with :func:`fuzz`, which applies the profile of ``conftest.py`` ("ci" by
default, "long" when ``AUDITOR_FUZZ_EXAMPLES`` is set), counts the inputs per parser for the
runner and bounds the time of each input. Structure-aware inputs start from real samples:
``tests/*/samples/`` and ``/work/shared/captures/`` (read in place, never copied; tests that
need them skip when they are absent) and are mutated by :func:`mutated`, :func:`mutated_text`
and :func:`mutated_json`. See docs/fuzzing.md.
"""

from __future__ import annotations

import functools
import json
import math
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import given, settings
from hypothesis import strategies as st

from auditor.imports import ImportReport
from auditor.intel.index import IntelIndex, file_source
from auditor.intel.model import IntelImportError, Source
from auditor.intel.schema import IndicatorKind, IntelFile
from auditor.records import Record, dumps, loads
from auditor.session.bodies import BodyStore

TESTS = Path(__file__).resolve().parents[1]
SHARED_CAPTURES = TESTS.parents[1] / "shared" / "captures"

#: Longest time one input may take before it counts as a hang.
INPUT_SECONDS = float(os.environ.get("AUDITOR_FUZZ_INPUT_SECONDS", "5"))
#: Examples per parser in CI (split between the parser's tests by their ``share``).
CI_EXAMPLES = int(os.environ.get("AUDITOR_FUZZ_CI_EXAMPLES", "300"))
#: Examples per parser in a long run: ``AUDITOR_FUZZ_EXAMPLES=N``.
LONG_EXAMPLES = int(os.environ.get("AUDITOR_FUZZ_EXAMPLES", "0") or 0)

#: Inputs tried, by parser (the test module's name without ``test_fuzz_``).
INPUTS: Counter[str] = Counter()
#: Where ``scripts/fuzz`` wants the statistics (JSON), if anywhere.
STATS_FILE = os.environ.get("AUDITOR_FUZZ_STATS", "")
_last_flush = [time.monotonic()]


def write_stats(extra: dict[str, dict[str, Any]]) -> None:
    """Inputs per parser (and whatever ``extra`` adds per parser) to :data:`STATS_FILE`."""
    _last_flush[0] = time.monotonic()
    if not STATS_FILE:
        return
    stats = {p: {"inputs": INPUTS[p], **extra.get(p, {})} for p in sorted(set(INPUTS) | set(extra))}
    tmp = Path(f"{STATS_FILE}.tmp")
    tmp.write_text(json.dumps(stats, indent=1, sort_keys=True) + "\n")
    tmp.replace(STATS_FILE)


F = TypeVar("F", bound=Callable[..., Any])


class InputTooSlow(AssertionError):
    """An input ran past :data:`INPUT_SECONDS`: a hang, or super-linear work."""


class _Alarm(BaseException):
    # BaseException so that a parser's ``except Exception`` cannot swallow it.
    pass


def _on_alarm(signum: int, frame: object) -> None:
    raise _Alarm


@contextmanager
def bounded(seconds: float | None = None) -> Iterator[None]:
    """Fail (as an AssertionError hypothesis can shrink) when the block runs too long."""
    limit = INPUT_SECONDS if seconds is None else seconds
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, limit * 2)  # a hang is cut off; slowness is measured
    start = time.perf_counter()
    try:
        yield
    except _Alarm:
        raise InputTooSlow(f"input still running after {limit * 2:.1f} s: a hang") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    elapsed = time.perf_counter() - start
    if elapsed > limit:
        raise InputTooSlow(f"input took {elapsed:.2f} s (limit {limit:.1f} s)")


def parser_of(module: str) -> str:
    """``tests.fuzz.test_fuzz_har`` -> ``har``."""
    return module.rpartition(".")[2].removeprefix("test_fuzz_")


SHARES: dict[str, dict[str, float]] = {}  # parser -> test -> share, as the tests declare them


def examples(share: float) -> int:
    """This test's examples: ``share`` of its parser's budget in the active profile."""
    total = LONG_EXAMPLES or CI_EXAMPLES
    return max(1 if LONG_EXAMPLES else 5, math.ceil(total * share))


def fuzz(*strategies: Any, share: float = 1.0, **named: Any) -> Callable[[F], F]:
    """``@given`` with the active fuzz profile, inputs counted and bounded in time.

    ``share`` is this test's part of its parser's examples (a parser's shares add up to 1).
    Put ``@example(...)`` regressions above it."""

    def decorate(fn: F) -> F:
        parser = parser_of(fn.__module__)
        SHARES.setdefault(parser, {})[fn.__name__] = share

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            INPUTS[parser] += 1
            if STATS_FILE and time.monotonic() - _last_flush[0] > 5:
                write_stats({})  # a run cut short still tells how far it got
            with bounded():
                return fn(*args, **kwargs)

        profile = settings.get_profile("long" if LONG_EXAMPLES else "ci")
        chosen = settings(profile, max_examples=examples(share))
        return chosen(given(*strategies, **named)(run))

    return decorate


# ------------------------------------------------------------------------------------ seeds


def sample_paths(*patterns: str) -> list[Path]:
    """Checked-in samples (``tests/<area>/samples/<pattern>``) that exist, sorted."""
    found: set[Path] = set()
    for pattern in patterns:
        found.update(TESTS.glob(pattern))
    return sorted(found)


def shared_captures() -> list[Path]:
    """The real captures of ``/work/shared/captures`` (empty when the folder is absent)."""
    if not SHARED_CAPTURES.is_dir():
        return []
    return sorted(p for p in SHARED_CAPTURES.iterdir() if p.suffix in (".pcap", ".pcapng"))


# -------------------------------------------------------------------------------- mutations

#: Values that break length fields, counters and offsets.
INTERESTING_INTS = (
    0,
    1,
    0x7F,
    0x80,
    0xFF,
    0x100,
    0x7FFF,
    0x8000,
    0xFFFF,
    0x10000,
    0x7FFFFFFF,
    0x80000000,
    0xFFFFFFFF,
)


@st.composite
def mutated(draw: st.DrawFn, seeds: Sequence[bytes], max_ops: int = 8, keep: int = 0) -> bytes:
    """One of ``seeds`` after a few byte-level mutations (AFL's havoc, in small): bit flips,
    interesting 8/16/32-bit values, inserted and deleted runs, duplicated runs, cuts and
    splices with another seed. The first ``keep`` bytes are left alone."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, max_ops))):
        size = len(data)
        op = draw(st.integers(0, 8))
        pos = keep + draw(st.integers(0, max(0, size - keep))) if size > keep else size
        if op == 0 and pos < size:  # flip a bit
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == 1 and pos < size:  # a random byte
            data[pos] = draw(st.integers(0, 255))
        elif op == 2:  # an interesting number, either byte order
            width = draw(st.sampled_from([1, 2, 4]))
            value = draw(st.sampled_from(INTERESTING_INTS)) & ((1 << (8 * width)) - 1)
            big = draw(st.booleans())
            data[pos : pos + width] = value.to_bytes(width, "big" if big else "little")
        elif op == 3:  # insert random bytes
            data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        elif op == 4 and pos < size:  # delete a run
            del data[pos : pos + draw(st.integers(1, 256))]
        elif op == 5 and pos < size:  # duplicate a run
            run = data[pos : pos + draw(st.integers(1, 512))]
            data[pos:pos] = run * draw(st.integers(1, 4))
        elif op == 6:  # cut
            del data[pos:]
        elif op == 7:  # splice: our head, another seed's tail
            other = draw(st.sampled_from(seeds))
            data[pos:] = other[draw(st.integers(0, len(other))) :]
        elif op == 8 and pos < size:  # swap two runs
            other_pos = keep + draw(st.integers(0, max(0, size - keep - 1)))
            n = draw(st.integers(1, 64))
            a, b = bytes(data[pos : pos + n]), bytes(data[other_pos : other_pos + n])
            data[pos : pos + len(a)] = b[: len(a)].ljust(len(a), b"\0")
            data[other_pos : other_pos + len(b)] = a[: len(b)].ljust(len(b), b"\0")
    return bytes(data)


#: Text that tends to break line parsers: separators, odd whitespace and digits, huge numbers.
HOSTILE_TOKENS = (
    "",
    " ",
    "\t",
    "\r",
    "\r\n",
    "\n\n",
    "\x00",
    "\x0b",
    "\x0c",
    "\x1c",
    "\x85",
    "\u2028",
    "\u00a0",
    "\ufeff",
    "\ud800",
    "\U0001f600",
    ":",
    "=",
    "[",
    "]",
    "{",
    "}",
    "(",
    ")",
    "/",
    "\\",
    '"',
    "'",
    "#",
    ";",
    ",",
    "|",
    "^",
    "$",
    "*",
    "@@",
    "||",
    "-",
    "+",
    "0x",
    "0",
    "-1",
    "9" * 30,
    "1e999",
    "٣",
    "²",
    "ff" * 20,
    "null",
    "true",
    "%s",
    "%n",
)


@st.composite
def mutated_text(draw: st.DrawFn, seeds: Sequence[str], max_ops: int = 8) -> str:
    """One of ``seeds`` after line- and character-level mutations: lines dropped, repeated,
    swapped or cut; hostile tokens and random text inserted."""
    lines = draw(st.sampled_from(seeds)).splitlines(keepends=True)
    for _ in range(draw(st.integers(0, max_ops))):
        n = len(lines)
        op = draw(st.integers(0, 6))
        i = draw(st.integers(0, max(0, n - 1)))
        if op == 0 and n:  # drop a line
            del lines[i]
        elif op == 1 and n:  # repeat a line
            lines[i:i] = [lines[i]] * draw(st.integers(1, 5))
        elif op == 2 and n:  # swap two lines
            j = draw(st.integers(0, n - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == 3 and n:  # cut a line
            line = lines[i]
            lines[i] = line[: draw(st.integers(0, len(line)))]
        elif op == 4:  # a hostile token somewhere in a line
            line = lines[i] if n else ""
            at = draw(st.integers(0, len(line)))
            token = draw(st.sampled_from(HOSTILE_TOKENS))
            new = line[:at] + token + line[at:]
            if n:
                lines[i] = new
            else:
                lines.append(new)
        elif op == 5:  # random text
            lines.insert(i, draw(st.text(max_size=80)))
        elif op == 6 and n:  # replace a run of characters with random ones
            line = lines[i]
            at = draw(st.integers(0, len(line)))
            lines[i] = line[:at] + draw(st.text(max_size=8)) + line[at + draw(st.integers(0, 8)) :]
    return "".join(lines)


#: Strings that break JSON consumers: empty, control, surrogate, huge, and near-misses.
HOSTILE_STRINGS = (
    "",
    " ",
    "\x00",
    "\ud800",
    "\udfff",
    "\U0010ffff",
    "\u202e",
    "x" * 5000,
    "a" * 70000,
    "http://",
    "https://",
    "http://[::1",
    "http://a:99999/",
    "http://a:-1/",
    "https://é.example",
    "ws://x",
    "ftp://x/",
    "//x",
    "http://%zz/",
    "http://a@b@c/",
    "HTTP/2",
    "h3",
    "gzip",
    "br",
    "deflate",
    "zstd",
    "gzip, br",
    "base64",
    "BASE64",
    "text",
    "1e999",
    "NaN",
    "-1",
    "0",
    "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00",
    "2024-13-45",
    "2024-01-01T00:00:00+25:00",
    "2024-01-01T00:00:00.1234567890123Z",
    "application/json; charset=utf-16",
    "text/plain; charset=nope",
    "multipart/form-data; boundary=",
    "multipart/form-data; boundary=x",
    "[::1]",
    "::ffff:1.2.3.4",
    "256.1.1.1",
    "=",
    "==",
    "A===",
    "send",
    "receive",
)

#: Numbers that break arithmetic on JSON numbers: overflow, NaN, infinities, signed zero.
HOSTILE_NUMBERS = (
    0,
    -1,
    -0.0,
    0.5,
    1e-320,
    1e308,
    -1e308,
    math.nan,
    math.inf,
    -math.inf,
    2**31,
    2**53 + 1,
    2**63,
    2**64,
    10**15 + 1,
    10**400,
    -(10**400),
)
hostile_numbers: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from(HOSTILE_NUMBERS), st.integers(), st.floats()
)
hostile_texts: st.SearchStrategy[str] = st.one_of(
    st.sampled_from(HOSTILE_STRINGS), st.text(max_size=40)
)
hostile_scalars: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    hostile_numbers,
    hostile_texts,
)
json_values: st.SearchStrategy[Any] = st.recursive(
    hostile_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


def _paths(doc: Any, here: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield here
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, (*here, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, (*here, i))


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        doc = doc[key]
    return doc


@st.composite
def mutated_json(
    draw: st.DrawFn, docs: Sequence[Any], max_ops: int = 6, keys: Sequence[str] = ()
) -> Any:
    """One of ``docs`` (parsed JSON) with values replaced by hostile ones, keys dropped or
    added (``keys`` are names worth adding), types changed and list items repeated."""
    doc = json.loads(json.dumps(draw(st.sampled_from(docs))))
    for _ in range(draw(st.integers(1, max_ops))):
        paths = list(_paths(doc))
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from([0, 0, 1, 2, 3, 4, 5, 5, 5]))
        if not path:
            if op == 0:
                doc = draw(json_values)
            continue
        parent, key = _get(doc, path[:-1]), path[-1]
        if op == 0:  # a hostile value
            parent[key] = draw(json_values)
        elif op == 1:  # drop it
            del parent[key]
        elif op == 2 and isinstance(parent[key], dict):  # an extra key
            known = bool(keys) and draw(st.booleans())
            name: str = draw(st.sampled_from(keys) if known else st.text())
            parent[key][name] = draw(json_values)
        elif op == 3:  # the wrong container
            parent[key] = [parent[key]] if draw(st.booleans()) else {"x": parent[key]}
        elif op == 4 and isinstance(parent, list):  # repeat a list item
            parent[key:key] = [parent[key]] * draw(st.integers(1, 3))
        elif op == 5:  # a hostile value of the same type
            parent[key] = draw(_same_type(parent[key]))
    return doc


def _same_type(value: Any) -> st.SearchStrategy[Any]:
    if isinstance(value, bool) or value is None:
        return hostile_scalars
    if isinstance(value, int | float):
        return hostile_numbers
    if isinstance(value, str):
        return hostile_texts
    if isinstance(value, list):
        return st.lists(json_values, max_size=3)
    return st.dictionaries(hostile_texts, json_values, max_size=3)


def json_bytes(doc: Any, *, ascii_only: bool = False) -> bytes:
    """JSON as an exporter would write it; lone surrogates survive as ``\\ud800`` escapes."""
    text = json.dumps(doc, ensure_ascii=ascii_only)
    return text.encode("utf-8", "surrogatepass")


# ---------------------------------------------------------------------------------- records


class NullStore(BodyStore):
    """A body store that hashes and measures bodies (decoding them, as the real one does)
    but writes nothing: fuzz inputs need no disk."""

    def __init__(self) -> None:
        super().__init__(Path("/nonexistent/fuzz-bodies"))

    def _write(self, sha: str, data: bytes) -> None:
        pass


def assert_writable(records: Sequence[Record]) -> None:
    """Every record can be written to ``flows.jsonl`` (strict UTF-8) and read back the same."""
    for rec in records:
        line = dumps(rec)
        line.encode("utf-8")  # the session writer's encoding: no lone surrogates
        assert loads(line) == rec, f"{type(rec).__name__} does not round-trip: {line[:300]}"


def assert_report_writable(report: ImportReport) -> None:
    """What the import writes to the manifest and the ``import`` event is strict UTF-8 JSON."""
    for part in (report.to_dict(), report.details):
        json.dumps(part, ensure_ascii=False).encode("utf-8")


# ------------------------------------------------------------------------------------ intel


def plain_data(value: Any) -> Any:
    """A YAML document as JSON-like data: mapping keys as strings (YAML allows others)."""
    if isinstance(value, dict):
        return {str(k): plain_data(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_data(v) for v in value]
    return value


def parse_intel_checked(parse: Callable[..., IntelFile], text: str, path: Path) -> None:
    """Run an intel list parser as the importer does: only an IntelImportError naming the file
    may escape it, and what it returns must be usable (:func:`assert_intel_usable`)."""
    try:
        result = parse(text, path=path, label="fuzz", source=intel_source())
    except IntelImportError as exc:
        assert str(exc).startswith(str(path))
        return
    assert_intel_usable(result)


def intel_source(label: str = "fuzz") -> Source:
    return file_source(Path(f"/fuzz/{label}.txt"), label, b"")


def assert_intel_usable(result: IntelFile) -> None:
    """An imported intel file can be indexed, matched against and written as UTF-8 JSON."""
    index = IntelIndex([result])
    for entry in result.entries[:20]:
        if entry.kind in (IndicatorKind.HOST, IndicatorKind.DOMAIN):
            assert index.match_host(entry.value), entry
        elif entry.kind is IndicatorKind.IP:
            assert index.match_ip(entry.value), entry
    out = {
        "summary": result.summary(),
        "entries": [e.to_json() for e in result.entries],
        "warnings": list(result.warnings),
        "organisations": [o.id for o in result.organisations],
    }
    json.dumps(out, ensure_ascii=False).encode("utf-8")
