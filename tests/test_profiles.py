"""Device profiles and site files: data that is checked whole before anything starts."""

from pathlib import Path

import pytest

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
        "electrical_fire_monitor", "gas_detector", "one_key_alarm"
    }
    assert len(site.institutions) == 3


def test_a_bad_register_type_names_the_file_the_field_and_what_was_expected(tmp_path):
    path = write_profile(tmp_path, GOOD.replace("type: uint16, scale: 0.1", "type: int64, scale: 0.1"))
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
    path.write_text(site.replace("profile: generic-gas-lel", "profile: acme-gas", 1),
                    encoding="utf-8")
    with pytest.raises(ProfileError, match=r"devices\.1 \(rc-gas-1\)\.profile: unknown profile 'acme-gas'"):
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
    reg = Register(name="v", address=0, type=dtype, byte_order=byte_order,
                   word_order=word_order, scale=0.1)
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
    regs = [Register(name="a", address=0), Register(name="b", address=1, type="float32"),
            Register(name="c", address=10), Register(name="d", address=0, table="input_register")]
    blocks = [(t.value, start, count) for t, start, count, _ in read_blocks(regs)]
    assert blocks == [("holding_register", 0, 3), ("holding_register", 10, 1),
                      ("input_register", 0, 1)]
