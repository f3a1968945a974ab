"""Settings are checked whole at start-up: a mistake stops start-up with the variable's name in
one line, rather than crashing a loop at the first fire."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from alerts.notices import TEMPLATE_VARIABLES, NoticeMessage, template_variables
from firewatch.settings import Settings, SettingsError


@pytest.fixture
def settings_from(monkeypatch):
    """Settings() as a service would make them with these FIREWATCH_ variables set."""

    def make(**environment: str) -> Settings:
        for name, value in environment.items():
            monkeypatch.setenv(f"FIREWATCH_{name}", value)
        return Settings(_env_file=None)

    return make


@pytest.mark.parametrize(
    ("variable", "value", "why"),
    [
        ("NOTICE_TIMEOUT_S", "inf", "finite number"),
        ("NOTICE_FALLBACK_AFTER_S", "-1", "greater than or equal to 0"),
        ("NOTICE_FALLBACK_AFTER_S", "nan", "finite number"),
        ("TIMESERIES_ROLLUPS", '{"0": 90}', "interval 0 s is outside 1 s to 7 days"),
        ("TIMESERIES_ROLLUPS", '{"60": -1}', "the 60 s tier keeps -1 days"),
        ("TIMESERIES_ROLLUPS", '{"60": 90', "not valid JSON"),
        ("TIMESERIES_ROLLUPS", '{"700": 90, "3600": 730}', "700 s must be positive and divide"),
        ("TIMESERIES_RAW_DAYS", "1e300", "less than or equal to 3660"),
        ("NOTICE_STORM_WINDOW_S", "1e9", "less than or equal to 600"),
        ("IOT_HAZARD_DEADLINE_HOURS", "1e308", "less than or equal to"),
        ("TOKEN_HOURS", "-12", "greater than 0"),
        ("METRICS_PORT", "94640", "less than or equal to 65535"),
    ],
)
def test_a_number_out_of_bounds_is_refused_in_one_line_naming_the_variable(
    settings_from, variable, value, why
):
    with pytest.raises(SettingsError) as err:
        settings_from(**{variable: value})
    message = str(err.value)
    assert message.startswith(f"setting FIREWATCH_{variable}") and why in message
    assert "\n" not in message


def test_a_webhook_url_pasted_with_a_trailing_newline_is_used_without_it(settings_from):
    url = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k1"
    assert settings_from(WECOM_WEBHOOK_URL=f" {url}\n").wecom_webhook_url == url


def test_an_empty_webhook_url_from_the_compose_file_means_none(settings_from):
    assert settings_from(WECOM_WEBHOOK_URL="").wecom_webhook_url is None


@pytest.mark.parametrize(
    "url",
    [
        "qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k1",
        "https://qyapi.weixin.qq.com:99999/send?key=k1",
        "https://qyapi.weixin.qq.com/send?key=k1 k2",
        "http://[::1/send?key=k1",
    ],
)
def test_a_webhook_url_httpx_cannot_send_to_is_refused_without_echoing_its_key(settings_from, url):
    with pytest.raises(SettingsError) as err:
        settings_from(WECOM_WEBHOOK_URL=url)
    assert str(err.value).startswith("setting FIREWATCH_WECOM_WEBHOOK_URL:")
    assert "k1" not in str(err.value)


def test_a_provider_endpoint_that_is_no_url_is_refused(settings_from):
    with pytest.raises(
        SettingsError,
        match="setting FIREWATCH_TENCENT_SMS_ENDPOINT: expected an http:// or https:// URL",
    ):
        settings_from(TENCENT_SMS_ENDPOINT="sms.tencentcloudapi.com")


def test_an_sms_template_variable_no_notice_fills_is_refused(settings_from):
    with pytest.raises(SettingsError) as err:
        settings_from(TENCENT_SMS_TEMPLATE_PARAMS='["institution", "place"]')
    assert str(err.value).startswith(
        "setting FIREWATCH_TENCENT_SMS_TEMPLATE_PARAMS: notices "
        "have no variable 'place'; they have institution,"
    )


def test_a_template_message_variable_no_notice_fills_is_refused(settings_from):
    with pytest.raises(
        SettingsError,
        match="FIREWATCH_WECHAT_OA_TEMPLATE_KEYS: notices have no variable 'building'",
    ):
        settings_from(WECHAT_OA_TEMPLATE_KEYS='{"building": "thing1"}')


def test_a_time_keyword_given_anything_but_the_time_is_refused(settings_from):
    with pytest.raises(SettingsError, match="keyword 'time5' takes a time, and 'alarm' is none"):
        settings_from(WECHAT_OA_TEMPLATE_KEYS='{"institution": "thing1", "alarm": "time5"}')


def test_a_notice_channel_chosen_without_its_credentials_is_refused(settings_from):
    with pytest.raises(
        SettingsError,
        match="^setting FIREWATCH_NOTICE_FALLBACK_CHANNEL="
        "tencent_sms needs FIREWATCH_TENCENT_SMS_SECRET_ID",
    ):
        settings_from(NOTICE_FALLBACK_CHANNEL="tencent_sms")


def test_the_variables_settings_are_checked_against_are_those_a_notice_fills():
    message = NoticeMessage(
        kind="raise",
        institution="丁桥镇敬老院",
        title="一键报警",
        location="丁桥镇 · 二楼",
        time="2026-12-06 08:00:00",
    )
    assert sorted(template_variables(message)) == sorted(TEMPLATE_VARIABLES)


@pytest.mark.parametrize("command", [["up", "--port", "0"], ["alerts"], ["gateway"]])
def test_firewatch_stops_at_start_up_with_the_one_line_reason(command, tmp_path):
    environment = {
        **os.environ,
        "FIREWATCH_NOTICE_TIMEOUT_S": "inf",
        "FIREWATCH_DATA_DIR": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-m", "firewatch.cli", *command],
        env=environment,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr == (
        "firewatch: setting FIREWATCH_NOTICE_TIMEOUT_S: Input should be a "
        "finite number (got 'inf')\n"
    )


@pytest.mark.parametrize(
    ("environment", "why"),
    [
        ({"MQTT_URL": "mqtts://broker.example", "MQTT_CA_FILE": "/nonexistent/ca.crt"}, "no such"),
        ({"MQTT_URL": "http://broker.example"}, "expected mqtt://"),
    ],
)
def test_a_broker_that_cannot_be_reached_as_written_stops_start_up(settings_from, environment, why):
    with pytest.raises(SettingsError, match=why):
        settings_from(**environment)
