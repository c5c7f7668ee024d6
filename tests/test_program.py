"""Temperature programs: TOML loading, validation messages, nominal profile, durations, cadences."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from hotstage.plans.program import Cadence, Cool, Hold, ProgramError, Ramp, RigLimits, TemperatureProgram

LIMITS = RigLimits(max_C=400.0, min_rate=0.1, max_rate=50.0, min_C=0.0)

DEMO_TOML = """
start_C = 25
[[segment]]
kind = "ramp"
to_C = 350
rate_C_per_min = 10
[[segment]]
kind = "hold"
minutes = 10
[[segment]]
kind = "cool"
to_C = 25
rate_C_per_min = 10
"""


def write(tmp_path: Path, text: str, name: str = "program.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_toml_load_equals_demo(tmp_path: Path) -> None:
    program = TemperatureProgram.from_toml(write(tmp_path, DEMO_TOML))
    assert program.start_C == 25.0
    assert program.segments == (Ramp(350.0, 10.0), Hold(10.0), Cool(25.0, 10.0))
    assert program.segments == TemperatureProgram.demo().segments
    program.validate(LIMITS)


def test_second_heating_is_more_segments(tmp_path: Path) -> None:
    text = DEMO_TOML + '[[segment]]\nkind = "ramp"\nto_C = 300\nrate_C_per_min = 5\n'
    program = TemperatureProgram.from_toml(write(tmp_path, text)).validate(LIMITS)
    assert [s.kind for s in program.segments] == ["ramp", "hold", "cool", "ramp"]
    assert program.duration_s == pytest.approx(4500.0 + 275.0 / 5.0 * 60.0)


def test_demo_duration_profile_and_max() -> None:
    demo = TemperatureProgram.demo()
    assert demo.duration_s == pytest.approx(1950.0 + 600.0 + 1950.0)
    assert demo.max_temperature == 350.0
    assert demo.temperature_at(-5.0) == 25.0
    assert demo.temperature_at(0.0) == 25.0
    assert demo.temperature_at(60.0) == pytest.approx(35.0)  # 10 °C/min
    assert demo.temperature_at(1950.0) == pytest.approx(350.0)
    assert demo.temperature_at(2200.0) == pytest.approx(350.0)  # in the hold
    assert demo.temperature_at(2550.0 + 600.0) == pytest.approx(250.0)  # 10 min into the cool
    assert demo.temperature_at(1e9) == pytest.approx(25.0)
    # the profile is continuous and piecewise linear
    ts = [i * 10.0 for i in range(451)]
    temps = [demo.temperature_at(t) for t in ts]
    assert max(abs(b - a) for a, b in zip(temps, temps[1:])) <= 10.0 / 6.0 + 1e-9


def test_to_dict_round_trip_and_metadata_fields() -> None:
    demo = TemperatureProgram.demo()
    d = demo.to_dict()
    assert d["duration_s"] == pytest.approx(4500.0)
    assert d["max_C"] == 350.0
    assert d["segments"][1] == {"kind": "hold", "minutes": 10.0}
    again = TemperatureProgram.from_dict(d)
    assert again.segments == demo.segments and again.start_C == demo.start_C


def seg(kind: str, *values: float) -> dict:
    """A segment in the TOML/metadata form."""
    keys = {"ramp": ("to_C", "rate_C_per_min"), "hold": ("minutes",), "cool": ("to_C", "rate_C_per_min")}[kind]
    return {"kind": kind, **dict(zip(keys, values))}


@pytest.mark.parametrize(
    ("segments", "needles"),
    [
        ([seg("ramp", 20.0, 10.0)], ["segment 0 (ramp)", "to_C = 20.0", "does not go up"]),
        ([seg("ramp", 100.0, 10.0), seg("cool", 150.0, 10.0)], ["segment 1 (cool)", "to_C = 150.0", "does not go down"]),
        ([seg("ramp", 100.0, 60.0)], ["segment 0 (ramp)", "rate_C_per_min = 60.0", "50.0"]),
        ([seg("ramp", 100.0, 0.01)], ["segment 0 (ramp)", "rate_C_per_min = 0.01"]),
        ([seg("ramp", 450.0, 10.0)], ["segment 0 (ramp)", "to_C = 450.0", "above the rig maximum 400.0"]),
        ([seg("ramp", 100.0, 10.0), seg("hold", 0.0)], ["segment 1 (hold)", "minutes = 0.0", "greater than 0"]),
        ([seg("ramp", 100.0, 10.0), seg("hold", -3.0)], ["segment 1 (hold)", "minutes = -3.0"]),
        ([seg("ramp", 100.0, 10.0), seg("cool", -20.0, 10.0)], ["segment 1 (cool)", "to_C = -20.0", "below the rig minimum"]),
        ([seg("ramp", 100.0, -5.0)], ["segment 0 (ramp)", "rate_C_per_min = -5.0"]),
        ([seg("ramp", math.nan, 10.0)], ["segment 0 (ramp)", "to_C = nan", "finite"]),
    ],
)
def test_validation_names_segment_and_value(segments: list, needles: list[str]) -> None:
    """Shape errors (on construction) and rig-limit errors (validate) alike name the segment, the key and value."""
    with pytest.raises(ProgramError) as err:
        TemperatureProgram.from_dict({"start_C": 25.0, "segments": segments}).validate(LIMITS)
    for needle in needles:
        assert needle in str(err.value), str(err.value)
    assert isinstance(err.value, ValueError) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda: Hold(0.0), "minutes = 0.0: Input should be greater than 0"),
        (lambda: Hold(-3.0), "minutes = -3.0"),
        (lambda: Ramp(100.0, -5.0), "rate_C_per_min = -5.0: Input should be greater than 0"),
        (lambda: Ramp(math.nan, 10.0), "to_C = nan: Input should be a finite number"),
        (lambda: Cool(math.inf, 10.0), "to_C = inf"),
        (lambda: Ramp("100", 10.0), "to_C = '100': Input should be a valid number"),  # a string is not a number
        (lambda: Ramp(100.0, True), "rate_C_per_min = True"),
        (lambda: Ramp(100.0, 10.0, kind="hold"), "kind = 'hold'"),
        (lambda: Hold(minutes=1.0, seconds=3), "unknown key 'seconds'"),
        (lambda: TemperatureProgram(25.0, (Ramp(20.0, 10.0),)), "segment 0 (ramp): to_C = 20.0 °C does not go up"),
        (lambda: TemperatureProgram(25.0, ()), "at least one [[segment]]"),
        (lambda: TemperatureProgram(25.0, (Ramp(100.0, 10.0),), name=5), "name = 5"),
    ],
)
def test_direct_construction_is_validated_in_one_line(make: object, needle: str) -> None:
    """The models check themselves when built from Python (plans, the queue server, notebooks): one line."""
    with pytest.raises(ProgramError) as err:
        make()  # type: ignore[operator]
    assert needle in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_models_are_frozen_and_segments_discriminated_by_kind() -> None:
    demo = TemperatureProgram.demo()
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen-instance error
        demo.start_C = 1000.0  # type: ignore[misc]
    with pytest.raises(Exception):  # noqa: B017
        demo.segments[0].to_C = 1000.0  # type: ignore[union-attr,misc]
    again = TemperatureProgram.model_validate(demo.model_dump())
    assert again == demo and [type(s) for s in again.segments] == [Ramp, Hold, Cool]
    schema = TemperatureProgram.model_json_schema()
    assert schema["additionalProperties"] is False
    assert schema["properties"]["segments"]["items"]["discriminator"]["propertyName"] == "kind"
    assert schema["$defs"]["Hold"]["properties"]["minutes"]["maximum"] == 7 * 24 * 60


def test_validate_does_not_change_the_program_and_limits_are_context() -> None:
    program = TemperatureProgram(25.0, (Ramp(350.0, 10.0),))
    assert program.validate(LIMITS) is program and program.validate() is program
    with pytest.raises(ProgramError, match="above the rig maximum 300.0"):
        program.validate(RigLimits(max_C=300.0))
    with pytest.raises(ProgramError, match="either"):
        TemperatureProgram.from_dict({"start_C": 25, "segment": [seg("hold", 1)], "segments": [seg("hold", 1)]})


def test_validation_start_and_empty() -> None:
    with pytest.raises(ProgramError, match="start_C = 500.0"):
        TemperatureProgram(500.0, (Cool(25.0, 10.0),)).validate(LIMITS)
    with pytest.raises(ProgramError, match=r"at least one \[\[segment\]\]"):
        TemperatureProgram(25.0, ()).validate(LIMITS)


def test_structural_checks_without_limits() -> None:
    TemperatureProgram(25.0, (Ramp(900.0, 500.0),)).validate()  # no limits: only the shape is checked
    with pytest.raises(ProgramError, match="does not go up"):
        TemperatureProgram(25.0, (Ramp(10.0, 5.0),)).validate()


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        (DEMO_TOML.replace("rate_C_per_min = 10\n[[segment]]\nkind = \"hold\"", "rate_C_per_min = 10\ntemp = 3\n[[segment]]\nkind = \"hold\"", 1),
         ["segment 0 (ramp)", "unknown key 'temp'"]),
        ("start_C = 25\nstart_temperature = 30\n" + DEMO_TOML.split("\n", 2)[2], ["unknown key 'start_temperature'"]),
        (DEMO_TOML.replace('kind = "hold"', 'kind = "dwell"'), ["segment 1", "'dwell'"]),
        (DEMO_TOML.replace("minutes = 10", "minutes = \"ten\""), ["segment 1 (hold)", "minutes", "'ten'"]),
        (DEMO_TOML.replace("minutes = 10", "seconds = 10"), ["segment 1 (hold)", "unknown key 'seconds'"]),
        ("start_C = 25\n", ["at least one [[segment]]"]),
        (DEMO_TOML.replace("start_C = 25", ""), ["missing key 'start_C'"]),
        ("start_C = 25\n[[segment]\n", ["not valid TOML"]),
    ],
)
def test_toml_errors_name_file_and_key(tmp_path: Path, text: str, needles: list[str]) -> None:
    path = write(tmp_path, text, "bad-program.toml")
    with pytest.raises(ProgramError) as err:
        TemperatureProgram.from_toml(path)
    assert str(path) in str(err.value)
    for needle in needles:
        assert needle in str(err.value)


def test_missing_file_is_a_program_error(tmp_path: Path) -> None:
    with pytest.raises(ProgramError, match="cannot read"):
        TemperatureProgram.from_toml(tmp_path / "nope.toml")


def test_rig_limits_are_consistent() -> None:
    with pytest.raises(ProgramError):
        RigLimits(max_C=10.0, min_C=20.0)
    with pytest.raises(ProgramError):
        RigLimits(min_rate=5.0, max_rate=1.0)


def test_cadence() -> None:
    every5 = Cadence.every_degrees(5)
    assert every5.to_dict() == {"every_C": 5.0}
    assert every5.due(25.0, 0.0, None, None)  # first acquisition is always due
    assert not every5.due(29.9, 100.0, 25.0, 0.0)
    assert every5.due(30.0, 100.0, 25.0, 0.0)
    assert every5.due(20.0, 100.0, 25.0, 0.0)  # cooling counts too
    every30 = Cadence.every_seconds(30)
    assert every30.to_dict() == {"every_s": 30.0}
    assert not every30.due(300.0, 29.0, 25.0, 0.0)
    assert every30.due(25.0, 30.0, 25.0, 0.0)
    for bad in (0, -1, math.inf):
        with pytest.raises(ProgramError):
            Cadence.every_degrees(bad)
    with pytest.raises(ProgramError):
        Cadence()


def test_cadence_anchors_move_on_a_grid() -> None:
    every5 = Cadence.every_degrees(5)
    assert every5.advance(25.3, 0.0, None, None) == (25.3, 0.0)  # first acquisition anchors at the reading
    assert every5.advance(31.1, 20.0, 25.3, 0.0) == (pytest.approx(30.3), 20.0)  # late poll: no drift
    assert every5.advance(36.0, 30.0, 25.3, 0.0) == (pytest.approx(35.3), 30.0)  # two steps at once
    assert every5.advance(74.0, 99.0, 80.0, 90.0) == (pytest.approx(75.0), 99.0)  # cooling moves down
    every30 = Cadence.every_seconds(30)
    assert every30.advance(40.0, 71.0, 25.0, 0.0) == (40.0, pytest.approx(60.0))
    # simulated ramp 25 → 80 °C polled every 1.3 °C: one acquisition per 5 °C step, none skipped
    anchor: tuple[float | None, float | None] = (None, None)
    fired = 0
    temperature = 25.0
    while temperature <= 80.0:
        if every5.due(temperature, 0.0, *anchor):
            anchor = every5.advance(temperature, 0.0, *anchor)
            fired += 1
        temperature += 1.3
    assert fired == 11


@pytest.mark.parametrize(
    ("segment", "needles"),
    [
        ('kind = ["ramp"]\nto_C = 100\nrate_C_per_min = 10', ["segment 0", "kind = ['ramp']", "must be one of"]),
        ('kind = { a = 1 }\nto_C = 100\nrate_C_per_min = 10', ["segment 0", "kind = {'a': 1}"]),
        ("kind = 5\nminutes = 3", ["segment 0", "kind = 5"]),
        ('kind = "ramp"\nto_C = inf\nrate_C_per_min = 10', ["segment 0 (ramp)", "to_C = inf", "finite"]),
        ('kind = "ramp"\nto_C = 100\nrate_C_per_min = nan', ["segment 0 (ramp)", "rate_C_per_min = nan"]),
        ('kind = "ramp"\nto_C = 100\nrate_C_per_min = true', ["rate_C_per_min = True"]),
    ],
)
def test_segment_types_are_one_line_errors(tmp_path: Path, segment: str, needles: list[str]) -> None:
    """A non-string kind used to be a TypeError traceback (unhashable list); now it is a ProgramError like the rest."""
    path = write(tmp_path, f"start_C = 25\n[[segment]]\n{segment}\n", "p.toml")
    with pytest.raises(ProgramError) as err:
        TemperatureProgram.from_toml(path)
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)
    for needle in needles:
        assert needle in str(err.value)


def test_derived_keys_must_be_numbers_too() -> None:
    d = TemperatureProgram.demo().to_dict()
    assert TemperatureProgram.from_dict(d).segments == TemperatureProgram.demo().segments
    with pytest.raises(ProgramError, match="duration_s = 'x'"):
        TemperatureProgram.from_dict({**d, "duration_s": "x"})


def test_holds_longer_than_a_week_are_refused() -> None:
    TemperatureProgram(25.0, (Ramp(100.0, 10.0), Hold(7 * 24 * 60.0))).validate(LIMITS)
    with pytest.raises(ProgramError, match=r"segment 1 \(hold\): minutes = 1e\+308: .* a week"):
        TemperatureProgram.from_dict({"start_C": 25.0, "segments": [seg("ramp", 100.0, 10.0), seg("hold", 1e308)]})
    with pytest.raises(ProgramError, match=r"minutes = 1e\+308"):
        Hold(1e308)


@pytest.mark.parametrize("key", ["max_C", "min_C", "min_rate", "max_rate"])
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_rig_limits_cannot_be_infinite(key: str, value: float) -> None:
    """An infinite limit would switch the check (and the over-temperature guard built on it) off."""
    with pytest.raises(ProgramError, match=key):
        RigLimits(**{key: value})


def test_overrun_limit_toml_json_default_and_one_line_errors(tmp_path: Path) -> None:
    """Issue 14 item 2: a ramp/cool may run `overrun_min` past its nominal end; default max(10 min, 50 %)."""
    text = DEMO_TOML.replace('to_C = 25\nrate_C_per_min = 10\n', 'to_C = 25\nrate_C_per_min = 10\noverrun_min = 20\n')
    program = TemperatureProgram.from_toml(write(tmp_path, text))
    ramp, _, cool = program.segments
    assert cool.overrun_min == 20.0 and cool.overrun_s(350.0) == 1200.0
    # default: 325 °C at 10 °C/min is 1950 s nominal, half of it (975 s) is above 10 min; 2 °C/min for 10 °C is not
    assert ramp.overrun_min is None and ramp.overrun_s(25.0) == pytest.approx(975.0)
    assert Ramp(35.0, 10.0).overrun_s(25.0) == 600.0
    # the JSON (metadata) form carries it only when given and round-trips
    assert "overrun_min" not in program.to_dict()["segments"][0]
    assert program.to_dict()["segments"][2]["overrun_min"] == 20.0
    assert TemperatureProgram.from_dict(program.to_dict()) == program
    assert Cool(25.0, 10.0, overrun_min=5).to_dict() == {"kind": "cool", "to_C": 25.0, "rate_C_per_min": 10.0,
                                                         "overrun_min": 5.0}
    for bad, needle in (("overrun_min = 0", "overrun_min = 0: Input should be greater than 0"),
                        ("overrun_min = 'ten'", "overrun_min = 'ten'"),
                        ("overrun_min = inf", "overrun_min = inf"),
                        ("overrun = 3", "unknown key 'overrun' (allowed: to_C, rate_C_per_min, overrun_min)")):
        path = write(tmp_path, DEMO_TOML.replace('to_C = 350\nrate_C_per_min = 10\n',
                                                 f'to_C = 350\nrate_C_per_min = 10\n{bad}\n'), "bad.toml")
        with pytest.raises(ProgramError) as info:
            TemperatureProgram.from_toml(path)
        message = str(info.value)
        assert message.startswith(f"{path}: segment 0 (ramp): ") and needle in message and "\n" not in message, message
    hold_text = DEMO_TOML.replace("minutes = 10\n", "minutes = 10\noverrun_min = 3\n")
    with pytest.raises(ProgramError, match="segment 1 \\(hold\\): unknown key 'overrun_min' \\(allowed: minutes\\)"):
        TemperatureProgram.from_toml(write(tmp_path, hold_text, "hold.toml"))
