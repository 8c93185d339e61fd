"""Scenarios: what to do with the handset while it is recorded, as YAML data.

A scenario file::

    name: idle
    description: No interaction, as in Leith's idle-handset measurements.
    parameters:
      duration: 5m          # default; `auditor audit --duration` overrides it
    citations:              # optional: the studies whose method it follows
      - "D. J. Leith, Mobile Handset Privacy ... (SecureComm 2021)"
    steps:
      - idle: ${duration}

Every step is validated (name, arguments, types) before anything touches the device, and an
error names the file, the line and the step.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from auditor.errors import ScenarioError
from auditor.timeutil import parse_duration


@dataclass(frozen=True, slots=True)
class Step:
    kind: str
    args: dict[str, Any]
    line: int
    index: int

    def describe(self) -> str:
        inner = ", ".join(f"{k}={v}" for k, v in self.args.items())
        return f"{self.kind}({inner})"


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    steps: tuple[Step, ...]
    source: str
    sha256: str
    parameters: dict[str, Any] = field(default_factory=dict)
    citations: tuple[str, ...] = ()

    @property
    def needs_shell(self) -> bool:
        return any(s.kind == "shell" for s in self.steps)

    def to_manifest(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "source": self.source,
            "sha256": self.sha256,
            "parameters": self.parameters,
            "citations": list(self.citations),
            "steps": [{"kind": s.kind, **s.args} for s in self.steps],
        }


# name -> (the key a scalar shorthand fills, {argument: (type-checker, required)})
_Check = Callable[[Any], Any]


def _dur(v: Any) -> float:
    if isinstance(v, bool):
        raise ValueError("expected a duration such as 30s or 5m")
    if isinstance(v, int | float):
        if v < 0:
            raise ValueError("negative duration")
        return float(v)
    return parse_duration(str(v))


def _str(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise ValueError("expected a non-empty string")
    return v


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError("expected an integer")
    return v


def _onoff(v: Any) -> bool:
    # YAML 1.1 reads bare on/off as booleans already
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("on", "off", "true", "false"):
        return v.lower() in ("on", "true")
    raise ValueError("expected on or off")


def _pkg(v: Any) -> str:
    s = _str(v)
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)+", s):
        raise ValueError(f"not a package name: {s!r}")
    return s


def _key(v: Any) -> str | int:
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    s = _str(v)
    if not re.fullmatch(r"(KEYCODE_)?[A-Z0-9_]+", s):
        raise ValueError(f"not a key code: {s!r}")
    return s


def _text(v: Any) -> str:
    if not isinstance(v, str | int | float) or isinstance(v, bool):
        raise ValueError("expected text")
    return str(v)


def _setting_ns(v: Any) -> str:
    s = _str(v)
    if s not in ("global", "secure", "system"):
        raise ValueError("namespace must be global, secure or system")
    return s


def _mark(v: Any) -> str:
    s = _str(v)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,79}", s):
        raise ValueError(f"a mark is a short name (letters, digits, - _ . :), not {s!r}")
    return s


def _bits(v: Any) -> int:
    n = _int(v)
    if n <= 0:
        raise ValueError("expected a positive bit mask")
    return n


def _setting_key(v: Any) -> str:
    s = _str(v)
    if not re.fullmatch(r"[A-Za-z0-9_.:-]+", s):
        raise ValueError(f"not a settings key: {s!r}")
    return s


STEPS: dict[str, tuple[str | None, dict[str, tuple[_Check, bool]]]] = {
    "idle": ("duration", {"duration": (_dur, True)}),
    "launch": ("package", {"package": (_pkg, True), "duration": (_dur, False)}),
    "stop": ("package", {"package": (_pkg, True)}),
    "tap": (None, {"x": (_int, True), "y": (_int, True)}),
    "swipe": (
        None,
        {
            "x1": (_int, True),
            "y1": (_int, True),
            "x2": (_int, True),
            "y2": (_int, True),
            "duration": (_dur, False),
        },
    ),
    "text": ("text", {"text": (_text, True)}),
    "keyevent": ("key", {"key": (_key, True)}),
    "open_url": ("url", {"url": (_str, True), "package": (_pkg, False)}),
    "wait_for": (
        None,
        {"activity": (_str, False), "package": (_pkg, False), "timeout": (_dur, False)},
    ),
    "screenshot": ("name", {"name": (_str, False)}),
    "reboot": (None, {"timeout": (_dur, False)}),
    "airplane_mode": ("on", {"on": (_onoff, True)}),
    "setting": (
        None,
        {
            "namespace": (_setting_ns, True),
            "key": (_setting_key, True),
            "value": (_text, False),
            # or: clear these bits of the value found (``default`` when there is none)
            "clear_bits": (_bits, False),
            "default": (_int, False),
            "source": (_text, False),  # where the setting's name and meaning come from
        },
    ),
    "mark": ("label", {"label": (_mark, True), "note": (_text, False)}),
    "sim_insert": (None, {"timeout": (_dur, False)}),
    "shell": ("cmd", {"cmd": (_str, True)}),
    "launch_system_apps": (
        None,
        {"duration": (_dur, False), "limit": (_int, False), "exclude": (lambda v: v, False)},
    ),
}

_PARAM = re.compile(r"\$\{([a-z_][a-z0-9_]*)\}")


def _substitute(value: Any, params: dict[str, Any], where: str) -> Any:
    if isinstance(value, str):
        whole = _PARAM.fullmatch(value)
        if whole:
            if whole.group(1) not in params:
                raise ScenarioError(f"{where}: unknown parameter ${{{whole.group(1)}}}")
            return params[whole.group(1)]

        def repl(m: re.Match[str]) -> str:
            if m.group(1) not in params:
                raise ScenarioError(f"{where}: unknown parameter ${{{m.group(1)}}}")
            return str(params[m.group(1)])

        return _PARAM.sub(repl, value)
    if isinstance(value, dict):
        return {k: _substitute(v, params, where) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, params, where) for v in value]
    return value


def _step_lines(text: str) -> list[int]:
    """The 1-based line of each item of ``steps:``; yaml.safe_load drops positions."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return []
    if not isinstance(root, yaml.MappingNode):
        return []
    for key, value in root.value:
        if getattr(key, "value", None) == "steps" and isinstance(value, yaml.SequenceNode):
            return [item.start_mark.line + 1 for item in value.value]
    return []


def parse_scenario(text: str, source: str, overrides: dict[str, Any] | None = None) -> Scenario:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise ScenarioError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(doc, dict):
        raise ScenarioError(f"{source}:1: a scenario is a mapping with 'name' and 'steps'")
    unknown = set(doc) - {"name", "description", "parameters", "citations", "steps"}
    if unknown:
        raise ScenarioError(f"{source}: unknown top-level keys: {', '.join(sorted(unknown))}")
    params = dict(doc.get("parameters") or {})
    if not isinstance(doc.get("parameters") or {}, dict):
        raise ScenarioError(f"{source}: 'parameters' must be a mapping")
    for k, v in (overrides or {}).items():
        if v is not None:
            params[k] = v
    citations = doc.get("citations") or []
    if not isinstance(citations, list) or not all(isinstance(c, str) and c for c in citations):
        raise ScenarioError(f"{source}: 'citations' must be a list of texts")
    steps_raw = doc.get("steps")
    if not isinstance(steps_raw, list) or not steps_raw:
        raise ScenarioError(f"{source}: 'steps' must be a non-empty list")
    lines = _step_lines(text)
    steps = []
    for i, raw in enumerate(steps_raw):
        line = lines[i] if i < len(lines) else 0
        where = f"{source}:{line}: step {i + 1}"
        steps.append(_parse_step(_substitute(raw, params, where), where, line, i))
    return Scenario(
        name=str(doc.get("name") or Path(source).stem),
        description=str(doc.get("description") or ""),
        steps=tuple(steps),
        source=source,
        sha256=hashlib.sha256(text.encode()).hexdigest(),
        parameters={k: str(v) for k, v in params.items()},
        citations=tuple(citations),
    )


def _parse_step(raw: Any, where: str, line: int, index: int) -> Step:
    value: Any
    if isinstance(raw, str):
        kind, value = raw, {}
    elif isinstance(raw, dict) and len(raw) == 1:
        ((kind, value),) = raw.items()
    else:
        raise ScenarioError(f"{where}: a step is one 'name: arguments' entry")
    if kind not in STEPS:
        raise ScenarioError(f"{where}: unknown step {kind!r} (known: {', '.join(sorted(STEPS))})")
    shorthand, spec = STEPS[kind]
    if value is None:
        value = {}
    if not isinstance(value, dict):
        if shorthand is None:
            raise ScenarioError(f"{where} ({kind}): expected arguments {', '.join(spec)}")
        value = {shorthand: value}
    extra = set(value) - set(spec)
    if extra:
        raise ScenarioError(f"{where} ({kind}): unknown argument(s) {', '.join(sorted(extra))}")
    args: dict[str, Any] = {}
    for name, (check, required) in spec.items():
        if name not in value:
            if required:
                raise ScenarioError(f"{where} ({kind}): missing argument {name!r}")
            continue
        try:
            args[name] = check(value[name])
        except ValueError as exc:
            raise ScenarioError(f"{where} ({kind}): {name}: {exc}") from None
    if kind == "wait_for" and not ({"activity", "package"} & set(args)):
        raise ScenarioError(f"{where} (wait_for): give an activity or a package")
    if kind == "setting" and ("value" in args) == ("clear_bits" in args):
        raise ScenarioError(f"{where} (setting): give a value or clear_bits, not both")
    if kind == "setting" and "default" in args and "clear_bits" not in args:
        raise ScenarioError(f"{where} (setting): default goes with clear_bits")
    return Step(kind, args, line, index)


def preset_names() -> list[str]:
    folder = resources.files("auditor") / "scenarios"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_scenario(name_or_path: str, overrides: dict[str, Any] | None = None) -> Scenario:
    """A preset by name (``idle``) or a YAML file by path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ScenarioError(f"{path}: {exc.strerror or exc}") from None
        return parse_scenario(text, str(path), overrides)
    preset = resources.files("auditor") / "scenarios" / f"{name_or_path}.yaml"
    if not preset.is_file():
        raise ScenarioError(
            f"no scenario {name_or_path!r}: presets are {', '.join(preset_names())}, "
            "or give a path to a YAML file"
        )
    return parse_scenario(preset.read_text(encoding="utf-8"), f"preset:{name_or_path}", overrides)
