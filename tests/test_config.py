"""The rig TOML schema (`hotstage.acquisition.config`): no setting can switch a safety limit off, every error is one line."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from hotstage.acquisition.config import InstrumentConfig, LimitsConfig, RigConfig, RigConfigError

RESOURCES = {name: f"TCPIP0::127.0.0.1::{5025 + i}::SOCKET" for i, name in enumerate(("furnace", "xrd", "thz", "pl"))}
VISA = {"rig": {"kind": "visa"}, **{name: {"resource": r} for name, r in RESOURCES.items()}}


def error_of(data: dict, source: str = "rig.toml") -> str:
    """The one-line message RigConfig.from_dict raises for `data`."""
    with pytest.raises(RigConfigError) as info:
        RigConfig.from_dict(data, source=source)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{source}: ")
    assert isinstance(info.value, ValueError)
    return message


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        # the tester's cases: limits that would switch the over-temperature guard off, settings accepted silently
        ({"limits": {"max_C": math.inf}}, "limits.max_C = inf: Input should be a finite number"),
        ({"limits": {"max_C": 1e308}}, "limits.max_C = 1e+308"),
        ({"limits": {"max_C": math.nan}}, "limits.max_C = nan"),
        ({"limits": {"max_C": 1500.0}}, "limits.max_C = 1500.0"),
        ({"limits": {"min_C": -math.inf}}, "limits.min_C = -inf"),
        ({"limits": {"max_rate_C_per_min": 1000.0}}, "limits.max_rate_C_per_min = 1000.0"),
        ({"limits": {"min_rate_C_per_min": 0.0}}, "limits.min_rate_C_per_min = 0.0"),
        ({"limits": {"max_C": 10.0, "min_C": 20.0}}, "limits.max_C = 10.0: must be above min_C = 20.0"),
        ({"limits": {"min_rate_C_per_min": 5.0, "max_rate_C_per_min": 1.0}}, "limits.max_rate_C_per_min = 1.0"),
        ({"limits": {"max_C": "400"}}, "limits.max_C = '400': Input should be a valid number"),
        ({"limits": {"max_C": True}}, "limits.max_C = true"),
        ({"rig": {"time_scale": 1e6}}, "rig.time_scale = 1000000.0"),
        ({"rig": {"time_scale": 0}}, "rig.time_scale = 0"),
        ({"rig": {"time_scale": math.inf}}, "rig.time_scale = inf"),
        ({"xrd": {"exposure_s": "abc"}}, "xrd.exposure_s = 'abc'"),
        ({"xrd": {"exposure_s": 0.0}}, "xrd.exposure_s = 0.0"),
        ({"pl": {"exposure_s": 1e5}}, "pl.exposure_s = 100000.0"),
        ({"furnace": {"output": "one"}}, "furnace.output = 'one'"),
        ({"furnace": {"output": 3}}, "furnace.output = 3"),
        ({"furnace": {"output": True}}, "furnace.output = true"),
        ({"furnace": {"output": 1.0}}, "furnace.output = 1.0"),
        ({"furnace": {"control_input": "E"}}, "furnace.control_input = 'E'"),
        ({"furnace": {"sample_input": 2}}, "furnace.sample_input = 2"),
        ({"furnace": {"tolerance_C": 0.0}}, "furnace.tolerance_C = 0.0"),
        ({"furnace": {"tolerance_C": 100.0}}, "furnace.tolerance_C = 100.0"),
        ({"furnace": {"settle_s": -1.0}}, "furnace.settle_s = -1.0"),
        ({"furnace": {"resource": "garbage"}}, "furnace.resource = 'garbage': not a VISA resource name"),
        ({"furnace": {"resource": "TCPIP0::127.0.0.1::99999::SOCKET"}}, "TCP port 99999 is outside 1–65535"),
        ({"cadence": {"xrd": {"every_C": 0}}}, "cadence.xrd.every_C = 0"),
        ({"cadence": {"xrd": {"every_s": math.inf}}}, "cadence.xrd.every_s = inf"),
        ({"cadence": {"xrd": {"every_C": 500}}}, "cadence.xrd.every_C = 500"),
        ({"cadence": {"xrd": {"every_C": 5, "every_s": 3}}}, "cadence.xrd = "),
        ({"cadence": {"xrd": {}}}, "cadence.xrd = {}: give exactly one"),
        ({"cadence": {"xrd": 5}}, "cadence.xrd = 5"),
        ({"cadence": {"uv": {"every_C": 5}}}, "cadence.uv: unknown key (allowed: xrd, thz, pl)"),
        ({"cadence": {"xrd": {"every_K": 5}}}, "cadence.xrd.every_K: unknown key (allowed: every_C, every_s)"),
        ({"limits": {"speed": 3}}, "limits.speed: unknown key (allowed: max_C"),
        ({"furnace": {"colour": "red"}}, "furnace.colour: unknown key"),
        ({"rig": {"speed": 3}}, "rig.speed: unknown key"),
        ({"rig": {"source": "x"}}, "rig.source: unknown key"),
        ({"rig": {"kind": ["visa"]}}, "rig.kind = ['visa']"),
        ({"rig": {"name": ""}}, "rig.name = ''"),
        ({"oven": {}}, "oven: unknown section"),
        ({"furnace": 5}, "furnace = 5: must be a table"),
        # a visa rig: real time only, every instrument with a resource
        ({**VISA, "rig": {"kind": "visa", "time_scale": 240.0}}, "rig.time_scale = 240.0: a visa rig runs in real time"),
        ({**VISA, "rig": {"kind": "visa", "time_scale": 2}}, "rig.time_scale = 2"),
        ({"rig": {"kind": "visa"}, "furnace": {"resource": RESOURCES["furnace"]}}, "xrd: a visa rig needs a [xrd] section"),
        ({**VISA, "pl": {"exposure_s": 1.0}}, "pl.resource: required for a visa rig"),
    ],
)
def test_bad_values_are_one_line_naming_key_and_value(data: dict, needle: str) -> None:
    message = error_of(data)
    assert needle in message, message


def test_several_errors_say_how_many_more() -> None:
    message = error_of({"limits": {"max_C": "hot", "min_C": "cold"}})
    assert message.endswith("(and 1 more)") and "limits.max_C = 'hot'" in message


def test_range_errors_say_why() -> None:
    """The field's description (the range and its reason) is part of the line."""
    message = error_of({"limits": {"max_C": 1e308}})
    assert "1200" in message and "Lake Shore 336" in message
    assert "0.1–100 K/min" in error_of({"limits": {"max_rate_C_per_min": 200.0}})


def test_good_files_and_defaults() -> None:
    config = RigConfig.from_dict(
        {"rig": {"name": "bench", "time_scale": 10000}, "limits": {"max_C": 1200, "min_C": -196},
         "cadence": {"thz": {"every_s": 30}}}, source="r.toml")
    assert config.time_scale == 10000.0 and config.limits.max_C == 1200.0 and config.limits.min_C == -196.0
    assert config.cadence == {"xrd": {"every_C": 5.0}, "pl": {"every_C": 5.0}, "thz": {"every_s": 30.0}}
    assert config.simulated and config.name == "bench" and config.source == "r.toml"
    visa = RigConfig.from_dict(VISA)
    assert not visa.simulated and visa.time_scale == 1.0 and visa.name == "rig"
    assert visa.instruments["furnace"].resource == RESOURCES["furnace"] and visa.instruments["furnace"].output == 1
    assert RigConfig.from_dict({**VISA, "rig": {"kind": "visa", "time_scale": 1}}).time_scale == 1.0
    assert visa.to_metadata()["limits"] == {"max_C": 400.0, "min_C": 0.0, "min_rate_C_per_min": 0.1,
                                            "max_rate_C_per_min": 50.0}
    assert RigConfig().to_metadata()["time_scale"] == 240.0


def test_direct_construction_is_checked_too() -> None:
    """The models are used from Python as well (tests, notebooks): the same rules, the same one line."""
    assert RigConfig(time_scale=120.0).time_scale == 120.0
    for make, needle in [
        (lambda: RigConfig(time_scale=-1.0), "<RigConfig>: rig.time_scale = -1.0"),
        (lambda: RigConfig(time_scale=1e6), "rig.time_scale = 1000000.0"),
        (lambda: LimitsConfig(max_C=math.inf), "<LimitsConfig>: max_C = inf"),
        (lambda: InstrumentConfig(output=4), "<InstrumentConfig>: output = 4"),
        (lambda: RigConfig(cadence={"xrd": {"every_C": -5.0}}), "cadence.xrd.every_C = -5.0"),
        (lambda: RigConfig(kind="visa"), "furnace: a visa rig needs a [furnace] section"),
    ]:
        with pytest.raises(RigConfigError) as info:
            make()
        assert needle in str(info.value) and "\n" not in str(info.value)


def test_configs_are_frozen() -> None:
    config = RigConfig()
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen-instance error
        config.limits.max_C = math.inf  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[limits]\nmax_C = inf\n", "limits.max_C = inf"),
        ("[limits]\nmax_C = nan\n", "limits.max_C = nan"),
        ("[rig]\ntime_scale = 1e6\n", "rig.time_scale"),
        ("furnace = 5\n", "furnace = 5"),
        ("[limits\n", "not valid TOML"),
    ],
)
def test_toml_files(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "rig.toml"
    path.write_text(text)
    with pytest.raises(RigConfigError) as info:
        RigConfig.from_toml(path)
    assert str(info.value).startswith(f"{path}: ") and needle in str(info.value)


def test_visa_rig_file_with_a_time_scale_is_refused_in_one_line(tmp_path: Path) -> None:
    """Issue 14 item 2: instruments run in real time; a time_scale the hardware cannot honour is never ignored."""
    body = "".join(f'[{name}]\nresource = "{r}"\n' for name, r in RESOURCES.items())
    path = tmp_path / "lab.toml"
    path.write_text('[rig]\nkind = "visa"\ntime_scale = 120\n' + body)
    with pytest.raises(RigConfigError) as info:
        RigConfig.from_toml(path)
    message = str(info.value)
    assert message.startswith(f"{path}: rig.time_scale = 120") and "real time" in message and "\n" not in message
    path.write_text('[rig]\nkind = "visa"\ntime_scale = 1\n' + body)
    assert RigConfig.from_toml(path).time_scale == 1.0


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(RigConfigError, match="rig file not found"):
        RigConfig.from_toml(tmp_path / "nope.toml")
    with pytest.raises(RigConfigError, match="cannot read"):
        RigConfig.from_toml(tmp_path)  # a directory
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe[rig]")
    with pytest.raises(RigConfigError, match="cannot read"):
        RigConfig.from_toml(tmp_path / "bin.toml")


# -- the same guarantees for analysis parameters (`--param`) and sample files ----------------------------------------
@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["thz_window_cm=-5"], "thz_window_cm = -5: Input should be greater than 0 (Savitzky–Golay window"),
        (["thz_window_cm=NaN"], "thz_window_cm = nan: Input should be a finite number"),
        (["thz_window_cm=Infinity"], "thz_window_cm = inf"),
        (["active_threshold=0"], "active_threshold = 0: Input should be greater than 0"),
        (["active_threshold=1.5"], "active_threshold = 1.5"),
        (["active_m=2.5"], "active_m = 2.5: Input should be a valid integer"),
        (["active_m=0"], "active_m = 0"),
        (["thz_polyorder=1"], "thz_polyorder = 1"),
        (["halos=1"], "halos = 1: Input should be a valid boolean"),
        (["microstrain=\"x\""], "microstrain = 'x'"),
        (["zni_bands_cm=[\"a\"]"], "zni_bands_cm[0] = 'a': Input should be a valid number"),
        (["zni_bands_cm=[-135]"], "zni_bands_cm[0] = -135: Input should be greater than 0 (band centres"),
        (["zni_bands_cm=[]"], "zni_bands_cm = []"),
        (["zni_bands_cm=5"], "zni_bands_cm = 5: Input should be a valid tuple"),
        (["caglioti=[1, 2]"], "caglioti = [1, 2]: Tuple should have at least 3 items"),
        (["caglioti=[1, 2, 30]"], "caglioti[2] = 30: Input should be less than or equal to 10"),
        (["caglioti=[1, 2, NaN]"], "caglioti"),
        (["phases=[]"], "phases = []"),
        (["pl_core=0"], "pl_core = 0: Input should be greater than 0"),
        (["active_phases=[\"X\"]"], "active_phases = ['X']: ['X'] are not among phases"),
        (["phases=[\"\"]"], "phases[0] = ''"),
        (["no_such=1"], "unknown analysis parameter(s) ['no_such']"),
        (["xrd_radiation=\"mo\""], "xrd_radiation"),
    ],
)
def test_analysis_parameters_are_finite_and_in_range(overrides: list[str], needle: str) -> None:
    from hotstage.analysis.live import AnalysisParameters, parse_overrides
    from hotstage.analysis.live.parameters import ParameterError

    with pytest.raises(ParameterError) as info:
        AnalysisParameters().replace(**parse_overrides(overrides))
    assert needle in str(info.value) and "\n" not in str(info.value), str(info.value)
    assert "(and " not in str(info.value)  # one mistake is one error (a bad element does not also count as "too short")
    if not overrides[0].startswith("no_such"):  # direct construction: the same one line
        with pytest.raises(ParameterError, match=re.escape(needle)):
            AnalysisParameters(**parse_overrides(overrides))


def test_analysis_parameter_defaults_and_good_overrides_pass() -> None:
    from hotstage.analysis.live import AnalysisParameters, parse_overrides

    default = AnalysisParameters()
    assert AnalysisParameters.from_dict(default.to_dict()) == default  # a stored derived run's parameters
    changed = default.replace(**parse_overrides(["thz_window_cm=25", "active_m=4", "zni_bands_cm=[135, 275.5]"]))
    assert (changed.thz_window_cm, changed.active_m, changed.zni_bands_cm) == (25.0, 4, (135.0, 275.5))
    assert isinstance(changed.thz_window_cm, float)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[sample]\ncspbi3_wt_frac = nan\n", "cspbi3_wt_frac = nan"),
        ("[sample]\nname = ''\n", "name = ''"),
        ("[model]\ntg_glass_C = 1e308\n", "[model] tg_glass_C = 1e+308: Input should be less than or equal to 1500"),
        ("[model]\ntg_glass_C = inf\n", "[model] tg_glass_C = inf: Input should be a finite number"),
        ("[model]\nforward_avrami_n = 10\n", "forward_avrami_n = 10: Input should be less than or equal to 4"),
        ("[model]\ncte_black_per_K = 0.5\n", "cte_black_per_K = 0.5"),
        ("[model]\nmax_substep_s = 1e9\n", "max_substep_s = 1000000000.0"),
        ("seed = -1\n", "seed = -1"),
        ("sample = 5\n", "'sample' must be a table"),
        ("[model]\nmilled_frac_csi = 0.9\nmilled_frac_poorly_crystalline = 0.5\n", "exceeds 1"),
        ("[model]\nforward_avrami_n = 0\n", "forward_avrami_n = 0: Input should be greater than 0"),
        ("[model]\ntg_glass_C = '300'\n", "tg_glass_C = '300': Input should be a valid number"),
        ("[model]\nnope = 1\n", "unknown key [model] 'nope'"),
        ("[sample]\ncolour = 'black'\n", "unknown key [sample] 'colour'"),
        ("[extra]\n", "unknown key or section 'extra'"),
        ("seed = 1.5\n", "seed = 1.5: Input should be a valid integer"),
    ],
)
def test_sample_files_are_finite_and_in_range(tmp_path: Path, text: str, needle: str) -> None:
    from hotstage.simulated.parameters import SampleConfigError, load_sample

    path = tmp_path / "sample.toml"
    path.write_text(text)
    with pytest.raises(SampleConfigError) as info:
        load_sample(path)
    assert str(info.value).startswith(f"{path}: ") and needle in str(info.value) and "\n" not in str(info.value)


def test_sample_models_check_construction_and_assignment() -> None:
    """SampleSpec and ModelParameters are pydantic models: built from Python they check the same rules (one line),
    and a parameter changed later is checked too (validate_assignment)."""
    from pydantic import ValidationError

    from hotstage.simulated.parameters import ModelParameters, SampleConfigError, SampleSpec

    with pytest.raises(SampleConfigError, match=r"<SampleSpec>: \[sample\] cspbi3_wt_frac = 1.5"):
        SampleSpec(name="x", cspbi3_wt_frac=1.5)
    with pytest.raises(SampleConfigError, match=r"<ModelParameters>: tg_glass_C = inf"):
        ModelParameters(tg_glass_C=math.inf)
    with pytest.raises(SampleConfigError, match="unknown key"):
        SampleSpec(name="x", cspbi3_wt_frac=0.5, colour="black")
    spec = SampleSpec.composite(0.25, tg_glass_C=280.0)
    assert spec.name == "(CsPbI3)0.25(agZIF-62)0.75" and spec.model.tg_glass_C == 280.0
    with pytest.raises(ValidationError):
        spec.model.tg_glass_C = math.nan
    assert spec.model.tg_glass_C == 280.0
