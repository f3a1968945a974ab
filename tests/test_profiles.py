"""Device profiles and site files: data that is checked whole before anything starts."""

import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from firewatch.profiles import (
    PROFILES_DIR,
    DataType,
    ProfileError,
    Register,
    load_profile,
    load_profiles,
    read_blocks,
)
from firewatch.settings import SITES_DIR
from firewatch.site import load_site

GOOD = (PROFILES_DIR / "generic-gas-lel.yaml").read_text(encoding="utf-8")


def write_profile(tmp_path: Path, text: str, name: str = "generic-gas-lel.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_every_shipped_profile_and_the_demo_site_load():
    profiles = load_profiles()
    site = load_site(SITES_DIR / "demo-county.yaml", profiles)
    assert {p.kind for p in profiles.values()} == {
        "electrical_fire_monitor",
        "gas_detector",
        "one_key_alarm",
    }
    assert len(site.institutions) == 3


def test_a_bad_register_type_names_the_file_the_field_and_what_was_expected(tmp_path):
    path = write_profile(
        tmp_path, GOOD.replace("type: uint16, scale: 0.1", "type: int64, scale: 0.1")
    )
    with pytest.raises(ProfileError) as err:
        load_profile(path)
    message = str(err.value)
    assert str(path) in message
    assert "registers.0.type" in message
    assert "'int16'" in message and "int64" in message


def test_an_alarm_rule_on_a_value_the_device_does_not_report_is_refused(tmp_path):
    path = write_profile(tmp_path, GOOD.replace("field: gas_concentration", "field: gas_ppm", 1))
    with pytest.raises(ProfileError, match="watches 'gas_ppm', which this profile does not report"):
        load_profile(path)


def test_a_profile_whose_model_differs_from_its_file_name_is_refused(tmp_path):
    path = write_profile(tmp_path, GOOD, name="other-name.yaml")
    with pytest.raises(ProfileError, match="field model is 'generic-gas-lel'"):
        load_profile(path)


def test_a_site_device_with_an_unknown_profile_names_the_device_entry(tmp_path):
    site = (SITES_DIR / "demo-county.yaml").read_text(encoding="utf-8")
    path = tmp_path / "site.yaml"
    path.write_text(
        site.replace("profile: generic-gas-lel", "profile: acme-gas", 1), encoding="utf-8"
    )
    with pytest.raises(
        ProfileError, match=r"devices\.1 \(rc-gas-1\)\.profile: unknown profile 'acme-gas'"
    ):
        load_site(path, load_profiles())


def test_a_site_set_point_for_a_rule_the_profile_lacks_is_refused(tmp_path):
    site = (SITES_DIR / "demo-county.yaml").read_text(encoding="utf-8")
    path = tmp_path / "site.yaml"
    path.write_text(site.replace("residual_current_high: 400", "leakage: 400"), encoding="utf-8")
    with pytest.raises(ProfileError, match="has no alarm rule 'leakage'"):
        load_site(path, load_profiles())


def test_a_serial_endpoint_without_its_serial_device_names_the_endpoint(tmp_path):
    site = (SITES_DIR / "demo-county.yaml").read_text(encoding="utf-8")
    path = tmp_path / "site.yaml"
    serial_line = "{id: dingqiao-rs485, transport: modbus_rtu,"
    path.write_text(site.replace("{id: dingqiao-rs485,", serial_line), encoding="utf-8")
    with pytest.raises(ProfileError, match="endpoint dingqiao-rs485: a serial device is needed"):
        load_site(path, load_profiles())


@pytest.mark.parametrize("dtype", ["int16", "uint16", "int32", "uint32", "float32"])
@pytest.mark.parametrize("byte_order", ["big", "little"])
@pytest.mark.parametrize("word_order", ["big", "little"])
def test_register_values_survive_encoding_in_every_type_and_order(dtype, byte_order, word_order):
    reg = Register(
        name="v", address=0, type=dtype, byte_order=byte_order, word_order=word_order, scale=0.1
    )
    physical = -12.5 if dtype.startswith(("int", "float")) else 1234.5
    words = reg.encode(reg.to_raw(physical))
    assert len(words) == DataType(dtype).width
    assert all(0 <= w <= 0xFFFF for w in words)
    assert reg.to_physical(reg.decode(words)) == pytest.approx(physical, abs=1e-4)


def test_a_float32_in_little_word_order_matches_the_usual_wire_layout():
    # 1.0f is 0x3F800000: big word order sends 0x3F80 0x0000, little word order swaps them
    big = Register(name="v", address=0, type="float32")
    little = Register(name="v", address=0, type="float32", word_order="little")
    assert big.encode(1.0) == [0x3F80, 0x0000]
    assert little.encode(1.0) == [0x0000, 0x3F80]


def test_contiguous_registers_are_read_in_one_request_and_gaps_split_them():
    regs = [
        Register(name="a", address=0),
        Register(name="b", address=1, type="float32"),
        Register(name="c", address=10),
        Register(name="d", address=0, table="input_register"),
    ]
    blocks = [(t.value, start, count) for t, start, count, _ in read_blocks(regs)]
    assert blocks == [
        ("holding_register", 0, 3),
        ("holding_register", 10, 1),
        ("input_register", 0, 1),
    ]


# --- hostile but valid YAML: refused at start-up, naming the file and the field ---------------

DEMO_SITE = (SITES_DIR / "demo-county.yaml").read_text(encoding="utf-8")
PROFILES = load_profiles()


def refusal_of_profile(tmp_path: Path, old: str, new: str) -> str:
    assert old in GOOD
    with pytest.raises(ProfileError) as err:
        load_profile(write_profile(tmp_path, GOOD.replace(old, new, 1)))
    return str(err.value)


def refusal_of_site(tmp_path: Path, old: str, new: str) -> str:
    assert old in DEMO_SITE
    path = tmp_path / "site.yaml"
    path.write_text(DEMO_SITE.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(ProfileError) as err:
        load_site(path, PROFILES)
    message = str(err.value)
    assert str(path) in message
    return message


@pytest.mark.parametrize(
    ("old", "new", "field", "why"),
    [
        ("set_point: 20", "set_point: .nan", "alarms.0.set_point", "finite number"),
        ("on_delay_s: 2", "on_delay_s: .inf", "alarms.0.on_delay_s", "finite number"),
        ("hysteresis: 2", "hysteresis: -.inf", "alarms.0.hysteresis", "finite number"),
        (
            "poll_interval_s: 1.0",
            "poll_interval_s: 1e-9",
            "poll_interval_s",
            "greater than or equal",
        ),
        ("poll_interval_s: 1.0", "poll_interval_s: 1e300", "poll_interval_s", "less than or equal"),
        ("off_delay_s: 10", "off_delay_s: 1e300", "alarms.0.off_delay_s", "less than or equal"),
        ("scale: 0.1", "scale: 0", "registers.0", "scale 0 would read every value as the offset"),
        (
            "address: 0, type: uint16",
            "address: 65535, type: float32",
            "registers.0",
            "a float32 at address 65535 runs past the last Modbus address 65535 (to 65536)",
        ),
        (
            "set_point: 20",
            "set_point: 40",
            "alarms.0",
            "set point 40 %LEL is outside the range [1, 25] %LEL of rule 'gas_low'",
        ),
    ],
)
def test_a_profile_value_out_of_bounds_names_the_file_its_field_and_why(
    tmp_path, old, new, field, why
):
    message = refusal_of_profile(tmp_path, old, new)
    assert "generic-gas-lel.yaml" in message and f"field {field}:" in message and why in message


@pytest.mark.parametrize(
    ("old", "new", "why"),
    [
        (
            "levels: [gas_low, gas_high]",
            "levels: [gas_high, gas_low]",
            "ladder 'gas_concentration': level 'gas_low' (set point 20.0) must lie above level "
            "'gas_high' (set point 50.0): levels are listed lowest first",
        ),
        (
            "levels: [gas_low, gas_high]",
            "levels: [gas_low, gas_top]",
            "ladder 'gas_concentration': no alarm rules ['gas_top'] in this profile",
        ),
        (
            "    severity: warning  #",
            "    #",
            "ladder 'gas_concentration': lower level 'gas_low' must have severity warning (预警)",
        ),
        (
            "levels: [gas_low, gas_high]",
            "levels: [gas_high]",
            "field ladders.0.levels: List should have at least 2 items",
        ),
    ],
)
def test_a_bad_ladder_is_refused_at_load_naming_the_file_and_the_ladder(tmp_path, old, new, why):
    message = refusal_of_profile(tmp_path, old, new)
    assert "generic-gas-lel.yaml" in message and why in message


def test_a_repeated_key_is_refused_with_both_lines_not_read_as_the_last(tmp_path):
    message = refusal_of_profile(
        tmp_path, "    hysteresis: 2\n", "    hysteresis: 2\n    set_point: 99\n"
    )
    assert "key 'set_point' appears twice (first on line" in message


def test_an_alias_bomb_is_refused_before_it_is_expanded(tmp_path):
    bomb = "".join(f"x{n}: &x{n} [{', '.join([f'*x{n - 1}'] * 10)}]\n" for n in range(1, 9))
    message = refusal_of_profile(
        tmp_path, "kind: gas_detector\n", f"kind: gas_detector\nx0: &x0 [boom]\n{bomb}"
    )
    assert "aliases expand to more than" in message


def test_a_site_file_nested_200000_deep_is_refused_not_a_crash(tmp_path):
    # libyaml's C parser, tried for speed, recursed on the C stack here and killed the process
    path = tmp_path / "site.yaml"
    path.write_text("institutions: " + "[" * 200_000 + "]" * 200_000 + "\n", encoding="utf-8")
    with pytest.raises(ProfileError) as err:
        load_site(path, PROFILES)
    assert f"site file {path}: nested too deeply" in str(err.value)


def test_a_site_file_saved_as_gbk_is_named_as_not_utf8_with_the_byte_offset(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_bytes(DEMO_SITE.encode("gb18030"))
    with pytest.raises(ProfileError) as err:
        load_site(path, PROFILES)
    offset = DEMO_SITE.encode("gb18030").index("青".encode("gb18030"))
    assert f"site file {path}: not UTF-8 text" in str(err.value)
    assert f"at byte offset {offset} (line 3)" in str(err.value)


@pytest.mark.parametrize(
    ("old", "new", "why"),
    [
        (
            "endpoint: rongcheng-rs485, unit_id: 2",
            "endpoint: rongcheng-rs485, unit_id: 1",
            "field devices.1 (rc-gas-1).unit_id: 1 is already device rc-efm-1's on endpoint "
            "rongcheng-rs485",
        ),
        (
            'phone: "13800000101"',
            "phone: 13800000101",
            "field institutions.0.head.phone: Input "
            "should be a valid string (got 13800000101); YAML read the unquoted value as int: "
            "put it in quotes",
        ),
        (
            'phone: "13800000101"',
            'phone: "-----"',
            "field institutions.0.head.phone: String should match pattern",
        ),
        (
            "id: rongcheng-eldercare",
            "id: null",
            "field institutions.0.id: Input should be a valid string (got None); YAML read the "
            "unquoted value as null: put it in quotes",
        ),
        (
            "residual_current_high: 400",
            "residual_current_high: 40000",
            "field devices.3 (dq-efm-1).set_points.residual_current_high: set point 40000 mA is "
            "outside the range [20, 1000] mA",
        ),
        (
            "residual_current_high: 400",
            "residual_current_high: 150",
            "field devices.3 (dq-efm-1).set_points: ladder 'residual_current': level "
            "'residual_current_high' (set point 150.0) must lie above level "
            "'residual_current_warning' (set point 200.0)",
        ),
        (
            "bureau:\n",
            "escalation: {alarm: {head_after_min: 1e300, bureau_after_min: 5}}\nbureau:\n",
            "field escalation.alarm.head_after_min: Input should be less than or equal to 10080",
        ),
    ],
)
def test_a_site_value_out_of_bounds_names_the_file_its_field_and_why(tmp_path, old, new, why):
    assert why in refusal_of_site(tmp_path, old, new)


def test_ids_that_yaml_1_1_calls_booleans_are_read_as_the_words_written(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text(
        DEMO_SITE.replace("rongcheng-eldercare", "no").replace("gw-rongcheng", "on"),
        encoding="utf-8",
    )
    site = load_site(path, PROFILES)
    assert site.institutions[0].id == "no" and site.gateways[0].id == "on"
    assert site.devices[0].institution == "no"


def test_a_webhook_url_pasted_with_a_newline_is_stripped_and_a_broken_one_refused(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text(
        DEMO_SITE.replace(
            "  duty:",
            '  wecom_webhook_url: "https://qyapi.weixin.qq.com/send?key=k\\n"\n  duty:',
            1,  # the bureau's; the institutions' duty rosters come after
        ),
        encoding="utf-8",
    )
    assert load_site(path, PROFILES).bureau.wecom_webhook_url.endswith("key=k")
    message = refusal_of_site(
        tmp_path, "  duty:", '  wecom_webhook_url: "https://qyapi.weixin.qq.com:99999/"\n  duty:'
    )
    assert "field bureau.wecom_webhook_url:" in message and "port 99999" in message


@settings(max_examples=60, deadline=None)
@given(
    st.one_of(
        st.floats(),
        st.floats(min_value=0, max_value=1200),
        st.sampled_from([1e308, -0.0, 5e-324, 19.999999, 1000.0000001]),
    )
)
def test_any_site_set_point_either_loads_within_the_rules_range_or_names_the_field(value):
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "site.yaml"
        path.write_text(
            DEMO_SITE.replace(
                "residual_current_high: 400", f"residual_current_high: {yaml_float(value)}"
            ),
            encoding="utf-8",
        )
        try:
            site = load_site(path, PROFILES)
        except ProfileError as exc:
            # the rule's range, and above its ladder's warning level (200 mA)
            assert not 200 < value <= 1000
            assert str(path) in str(exc)
            assert "devices.3.set_points.residual_current_high" in str(exc) or (
                "devices.3 (dq-efm-1).set_points" in str(exc)
                and "residual_current_high" in str(exc)
            )
        else:
            assert 20 <= site.devices[3].set_points["residual_current_high"] <= 1000


def yaml_float(value: float) -> str:
    """A float as YAML writes it (.nan, .inf, -.inf, 1e+300)."""
    return yaml.safe_dump(value).removesuffix("\n...\n").strip()
