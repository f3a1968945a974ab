"""The configuration reference (docs/configuration.md), written from the settings model.

The page is generated, never edited, so that it cannot drift from what the services read:
``python -m firewatch.settings_doc > docs/configuration.md``; tests/test_configuration_doc.py
fails when the committed page is stale.  Each variable's meaning is its ``Field`` description
in firewatch/settings.py, its type, default and bounds come from the model; what a secret
defaults to is never printed.
"""

from __future__ import annotations

import json
import re
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic.fields import FieldInfo

from firewatch.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parent.parent
COMMAND = "python -m firewatch.settings_doc > docs/configuration.md"
#: settings whose value is a credential: their default is never shown
SECRET = re.compile(r"secret|password|_token$|(?<!tile)_key$")
#: defaults computed at start-up, said in words
COMPUTED_DEFAULTS = {"instance": "the host name"}

#: the page's sections: title, what they configure, their settings in order
GROUPS: list[tuple[str, str, list[str]]] = [
    (
        "Web app and state",
        "Where the web app listens and where local state is kept.",
        ["host", "port", "data_dir"],
    ),
    (
        "Broker and consumer partitions",
        (
            "The MQTT broker every service talks to, and how replicas of `firewatch ingest` and "
            "`firewatch alerts` split the site's gateways (see "
            "[Operations](operations.md#consumer-partitions))."
        ),
        [
            "mqtt_url",
            "mqtt_ca_file",
            "mqtt_embedded_port",
            "consumer_partitions",
            "consumer_partition",
            "alerts_lease_s",
            "instance",
        ],
    ),
    (
        "Stores",
        (
            "The relational database (alarms, ledger, notices, accounts) and the "
            "time-series store (readings)."
        ),
        [
            "database_url",
            "influx_url",
            "influx_token",
            "influx_org",
            "influx_bucket",
            "timeseries_raw_days",
            "timeseries_rollups",
            "timeseries_compact_every_s",
        ],
    ),
    (
        "Site, devices and gateways",
        "The site file, device profiles and the gateway's outbox.",
        ["site_file", "profiles_dir", "simulate", "gateway_outbox_max_messages"],
    ),
    (
        "Gateway checks and the self-check (巡检)",
        "What a gateway's messages must be to be applied, and when silence becomes an alarm.",
        [
            "gateway_clock_max_ahead_s",
            "gateway_max_age_days",
            "gateway_silent_after_s",
            "monitor_silent_after_s",
            "applied_keep_hours",
            "dead_letter_keep_days",
        ],
    ),
    (
        "Notices",
        "How alarm notices go out: channel, fallback, storm control.",
        [
            "notice_channel",
            "notice_fallback_channel",
            "notice_fallback_after_attempts",
            "notice_fallback_after_s",
            "notice_storm_window_s",
            "notice_timeout_s",
            "wecom_webhook_url",
            "iot_hazard_deadline_hours",
            "public_url",
            "confirm_link_hours",
        ],
    ),
    (
        "Shielding and test mode",
        "A device shielded (屏蔽) or in test (测试): how long at most, how soon it ends "
        "(see [Shielding and test mode](shielding.md)).",
        ["device_mode_max_hours", "device_mode_sweep_s"],
    ),
    (
        "Alibaba Cloud SMS",
        "The `aliyun_sms` channel: a text to the duty person's mobile.",
        [
            "aliyun_sms_access_key_id",
            "aliyun_sms_access_key_secret",
            "aliyun_sms_sign_name",
            "aliyun_sms_template_code",
            "aliyun_sms_endpoint",
        ],
    ),
    (
        "Tencent Cloud SMS",
        "The `tencent_sms` channel: a text to the duty person's mobile.",
        [
            "tencent_sms_secret_id",
            "tencent_sms_secret_key",
            "tencent_sms_sdk_app_id",
            "tencent_sms_sign_name",
            "tencent_sms_template_id",
            "tencent_sms_template_params",
            "tencent_sms_region",
            "tencent_sms_endpoint",
        ],
    ),
    (
        "Voice calls",
        "The `aliyun_vms` and `tencent_vms` channels: a text-to-speech call to the duty person, "
        "then the next on the call list while nobody answers (see docs/dispatch.md).",
        [
            "aliyun_vms_access_key_id",
            "aliyun_vms_access_key_secret",
            "aliyun_vms_tts_code",
            "aliyun_vms_show_number",
            "aliyun_vms_endpoint",
            "tencent_vms_secret_id",
            "tencent_vms_secret_key",
            "tencent_vms_sdk_app_id",
            "tencent_vms_template_id",
            "tencent_vms_region",
            "tencent_vms_endpoint",
            "voice_play_times",
            "voice_result_wait_s",
        ],
    ),
    (
        "WeChat Official Account",
        "The `wechat_oa` channel: a template message to an openid.",
        [
            "wechat_oa_app_id",
            "wechat_oa_app_secret",
            "wechat_oa_template_id",
            "wechat_oa_template_keys",
            "wechat_oa_endpoint",
        ],
    ),
    (
        "Accounts and security",
        "Production mode, login tokens, login throttling, metrics access.",
        [
            "env",
            "secret_key",
            "confirm_link_secret",
            "token_hours",
            "login_failures_per_account",
            "login_failures_per_address",
            "login_failure_window_s",
            "metrics_token",
            "demo_password",
        ],
    ),
    ("Logs and metrics", "", ["log_format", "metrics_port"]),
    (
        "Map",
        "The console's map: an optional tile layer; how long its lists are kept ready.",
        [
            "map_tile_url",
            "map_tile_key",
            "map_tile_coords",
            "map_tile_attribution",
            "web_snapshot_max_age_s",
        ],
    ),
]


def variable(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _type(annotation: Any, field: FieldInfo) -> str:
    """The kind of value the variable takes, in words."""
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) in (Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    if get_origin(annotation) is Literal:
        return " | ".join(f"`{choice}`" for choice in get_args(annotation))
    url = any(
        getattr(getattr(m, "func", None), "__name__", "") == "checked_url"
        for m in [*field.metadata, *getattr(annotation, "__metadata__", ())]
    )
    if url:
        return "URL"
    base = get_origin(annotation) or annotation
    if getattr(annotation, "__metadata__", None):
        base = get_args(annotation)[0]
    return {
        str: "text",
        int: "integer",
        float: "number",
        bool: "`true` | `false`",
        Path: "path",
        dict: "JSON object",
        list: "JSON list",
    }.get(base, str(annotation))


def _number(value: float) -> str:
    """As an operator types it: 100000000, 0.5, never 1e+08."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _bounds(field: FieldInfo) -> str:
    signs = {
        annotated_types.Ge: ("≥", "ge"),
        annotated_types.Gt: (">", "gt"),
        annotated_types.Le: ("≤", "le"),
        annotated_types.Lt: ("<", "lt"),
    }
    parts = []
    for meta in field.metadata:
        if type(meta) in signs:
            sign, attr = signs[type(meta)]
            parts.append(f"{sign} {_number(getattr(meta, attr))}")
        elif isinstance(meta, annotated_types.MinLen):
            parts.append(f"{meta.min_length}+ characters")
    return ", ".join(parts)


def _default(name: str, field: FieldInfo) -> str:
    if name in COMPUTED_DEFAULTS:
        return COMPUTED_DEFAULTS[name]
    value = field.default
    if value is None or value == "":
        return "unset"
    if SECRET.search(name):
        return "*set, not shown*"
    if isinstance(value, Path):
        value = value.relative_to(ROOT) if value.is_relative_to(ROOT) else value
        return f"`{value}`"
    if isinstance(value, dict | list):
        return f"`{json.dumps(value, ensure_ascii=False)}`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float):
        return f"`{_number(value)}`"
    return f"`{value}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render() -> str:
    """The whole page, as Markdown."""
    fields = Settings.model_fields
    grouped = [name for _, _, names in GROUPS for name in names]
    ungrouped = [name for name in fields if name not in grouped]
    if ungrouped or len(grouped) != len(set(grouped)) or set(grouped) - set(fields):
        raise ValueError(
            f"firewatch/settings_doc.py GROUPS must name every setting once; "
            f"not grouped: {ungrouped}, unknown or repeated: "
            f"{sorted(set(grouped) - set(fields)) or 'none'}"
        )
    undescribed = [name for name in fields if not fields[name].description]
    if undescribed:
        raise ValueError(
            f"give these settings a Field description in firewatch/settings.py: {undescribed}"
        )
    lines = [
        "# Configuration reference",
        "",
        f"<!-- generated by `{COMMAND}`: do not edit; edit firewatch/settings.py -->",
        "",
        (
            "Every Firewatch process reads these environment variables, or a `.env` file in its "
            "working directory. A value out of its bounds, or settings that do not fit together, "
            "stop the process at start with one line naming the variable (exit code 2). Numbers "
            "must be finite; JSON-valued settings take JSON in the environment. Secrets' defaults "
            "are not shown."
        ),
        "",
    ]
    for title, intro, names in GROUPS:
        lines += [f"## {title}", ""]
        if intro:
            lines += [intro, ""]
        lines += ["| variable | type | default | meaning |", "| --- | --- | --- | --- |"]
        for name in names:
            field = fields[name]
            kind = _type(field.annotation, field)
            bounds = _bounds(field)
            kind = f"{kind}, {bounds}" if bounds else kind
            lines.append(
                f"| `{variable(name)}` | {_cell(kind)} | {_cell(_default(name, field))} "
                f"| {_cell(field.description or '')} |"
            )
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(), end="")
