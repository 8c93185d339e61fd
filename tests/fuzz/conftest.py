"""Hypothesis profiles of the fuzz tests, and the per-parser statistics ``scripts/fuzz`` reads.

* ``ci`` (the default): a few hundred examples per parser, derandomized so that CI runs the
  same inputs every time; all fuzz tests together stay under a minute on two cores.
* ``long``: ``AUDITOR_FUZZ_EXAMPLES=N`` examples per parser, random, for ``scripts/fuzz``.

The profiles are registered here but never loaded globally: :func:`tests.fuzz.helpers.fuzz` applies
one to each fuzz test, so the rest of the suite keeps hypothesis' defaults. With
``AUDITOR_FUZZ_STATS=FILE`` the inputs tried, failures and seconds per parser are written to
FILE as JSON at the end of the session.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, settings

from tests.fuzz.helpers import parser_of, write_stats

_QUIET = list(HealthCheck)  # inputs are big and slow on purpose; the fuzz decides what to try

settings.register_profile(
    "ci",
    deadline=None,  # time is bounded by tests.fuzz.bounded, which hypothesis can shrink
    derandomize=True,
    database=None,
    suppress_health_check=_QUIET,
    print_blob=True,
)
settings.register_profile(
    "long",
    deadline=None,
    derandomize=False,
    suppress_health_check=_QUIET,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
    print_blob=True,
)

_FAILURES: Counter[str] = Counter()
_SECONDS: dict[str, float] = {}
_TESTS: Counter[str] = Counter()


def _parser(nodeid: str) -> str | None:
    path = nodeid.split("::", 1)[0]
    if "tests/fuzz/" not in path or not path.endswith(".py"):
        return None
    return parser_of(Path(path).stem)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    parser = _parser(report.nodeid)
    if parser is None:
        return
    _SECONDS[parser] = _SECONDS.get(parser, 0.0) + report.duration
    if report.when == "call":
        _TESTS[parser] += 1
    if report.failed:
        _FAILURES[parser] += 1


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    write_stats(
        {
            p: {
                "failures": _FAILURES[p],
                "tests": _TESTS[p],
                "seconds": round(_SECONDS.get(p, 0.0), 1),
            }
            for p in set(_FAILURES) | set(_TESTS)
        }
    )
