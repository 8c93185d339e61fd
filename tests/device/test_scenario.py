from pathlib import Path

import pytest

from auditor.device.scenario import STEPS, load_scenario, parse_scenario, preset_names
from auditor.errors import ScenarioError


def test_presets_load() -> None:
    assert {"idle", "open-system-apps", "browser-canary", "reboot-and-idle"} <= set(preset_names())
    for name in preset_names():
        s = load_scenario(name)
        assert s.steps and s.sha256 and s.description


def test_duration_override_and_manifest_form() -> None:
    s = load_scenario("idle", {"duration": "45s"})
    assert s.steps[0].kind == "idle" and s.steps[0].args == {"duration": 45.0}
    m = s.to_manifest()
    assert m["parameters"]["duration"] == "45s" and m["steps"] == [
        {"kind": "idle", "duration": 45.0}
    ]


def test_every_step_kind_parses(tmp_path: Path) -> None:
    text = """
name: all
steps:
  - idle: 1s
  - launch: com.miui.weather2
  - stop: com.miui.weather2
  - tap: {x: 1, y: 2}
  - swipe: {x1: 1, y1: 2, x2: 3, y2: 4, duration: 300ms}
  - text: hello
  - keyevent: KEYCODE_HOME
  - open_url: https://example.com/
  - wait_for: {package: com.android.chrome, timeout: 5s}
  - screenshot: home
  - reboot
  - airplane_mode: on
  - setting: {namespace: global, key: auto_time, value: 0}
  - shell: echo hi
  - launch_system_apps: {duration: 2s, limit: 3}
  - mark: here
  - sim_insert: {timeout: 5s}
"""
    s = parse_scenario(text, "all.yaml")
    assert [st.kind for st in s.steps] == [
        "idle",
        "launch",
        "stop",
        "tap",
        "swipe",
        "text",
        "keyevent",
        "open_url",
        "wait_for",
        "screenshot",
        "reboot",
        "airplane_mode",
        "setting",
        "shell",
        "launch_system_apps",
        "mark",
        "sim_insert",
    ]
    assert set(STEPS) == {st.kind for st in s.steps}
    assert s.steps[11].args == {"on": True}
    assert s.needs_shell
    assert s.steps[1].line == 5


@pytest.mark.parametrize(
    "body,message,line",
    [
        ("  - idle: 1s\n  - dance: {}\n", "unknown step 'dance'", 5),
        ("  - idle: soon\n", "not a duration", 4),
        ("  - tap: {x: 1}\n", "missing argument 'y'", 4),
        ("  - tap: {x: 1, y: 2, z: 3}\n", "unknown argument", 4),
        ("  - launch: not a package\n", "not a package name", 4),
        ("  - idle: 1s\n  - wait_for: {timeout: 3s}\n", "give an activity or a package", 5),
        ("  - setting: {namespace: root, key: a, value: b}\n", "namespace must be", 4),
        ("  - idle: ${nope}\n", "unknown parameter", 4),
    ],
)
def test_malformed_steps_name_file_line_and_step(body: str, message: str, line: int) -> None:
    text = "name: bad\ndescription: x\nsteps:\n" + body
    with pytest.raises(ScenarioError) as exc:
        parse_scenario(text, "bad.yaml")
    assert message in str(exc.value)
    assert f"bad.yaml:{line}:" in str(exc.value)


@pytest.mark.parametrize(
    "text,message",
    [
        ("steps: [", "not valid YAML"),
        ("- a\n- b\n", "a scenario is a mapping"),
        ("name: x\nsteps: []\n", "non-empty list"),
        ("name: x\nstepz: [idle: 1s]\n", "unknown top-level"),
    ],
)
def test_malformed_documents(text: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        parse_scenario(text, "f.yaml")


def test_unknown_preset_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="presets are"):
        load_scenario("no-such-preset")
    with pytest.raises(ScenarioError, match=r"missing\.yaml"):
        load_scenario(str(tmp_path / "missing.yaml"))
