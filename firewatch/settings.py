"""One settings model for every service: environment variables ``FIREWATCH_*`` or a .env file."""

from __future__ import annotations

import re
import socket
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as UnparsableSetting

from alerts.notices import TEMPLATE_VARIABLES
from firewatch.mqtt import BrokerAddress
from firewatch.partition import Partition
from firewatch.profiles import PROFILES_DIR
from firewatch.urls import OptionalWebUrl, WebUrl

SITES_DIR = Path(__file__).resolve().parent.parent / "sites"
NoticeChannel = Literal["wecom_robot", "aliyun_sms", "tencent_sms", "wechat_oa"]
#: the published development key; production mode refuses to start with it
DEFAULT_SECRET_KEY = "firewatch-development-key-not-for-production"
ENV_PREFIX = "FIREWATCH_"
#: the longest a time series is kept: longer is an archive, not a monitoring store (and a
#: figure like 1e300 days overflows the date arithmetic of the compaction)
MAX_KEEP_DAYS = 3660.0
#: the setting that turns each provider's channel on (alerts.channels.configured_channels)
_CHANNEL_CREDENTIAL = {
    "aliyun_sms": "aliyun_sms_access_key_id",
    "tencent_sms": "tencent_sms_secret_id",
    "wechat_oa": "wechat_oa_app_id",
}
#: a WeChat template keyword: its type, then its number (thing1, time5, character_string2)
_KEYWORD = re.compile(r"[a-z_]+[0-9]+")


class SettingsError(ValueError):
    """A setting that cannot be used; the one-line message names the FIREWATCH_ variable."""


def _known_variables(names: list[str]) -> list[str]:
    unknown = [n for n in names if n not in TEMPLATE_VARIABLES]
    if unknown:
        raise ValueError(
            f"notices have no variable {', '.join(map(repr, unknown))}; "
            f"they have {', '.join(TEMPLATE_VARIABLES)}"
        )
    return names


def _template_keys(keys: dict[str, str]) -> dict[str, str]:
    """Notice variable -> template keyword, as alerts.channels.wechat_oa fills them."""
    _known_variables(list(keys))
    for name, keyword in keys.items():
        if not _KEYWORD.fullmatch(keyword):
            raise ValueError(f"{keyword!r} (for {name}) is not a template keyword such as thing1")
        # the channel writes a time keyword's value as a date and time: only the time fits
        if re.sub(r"[0-9]+$", "", keyword) == "time" and name != "time":
            raise ValueError(
                f"keyword {keyword!r} takes a time, and {name!r} is none; "
                "give it the variable 'time'"
            )
    return keys


def _rollup_tiers(tiers: dict[int, float]) -> dict[int, float]:
    for every_s, days in tiers.items():
        if not 1 <= every_s <= 7 * 86400:
            raise ValueError(f"interval {every_s} s is outside 1 s to 7 days")
        if not 0 < days <= MAX_KEEP_DAYS:
            raise ValueError(
                f"the {every_s} s tier keeps {days:g} days; "
                f"give more than 0 and at most {MAX_KEEP_DAYS:g}"
            )
    return tiers


def describe_settings_error(exc: ValidationError) -> str:
    """One line naming each refused FIREWATCH_ variable and why; a value is echoed only where
    it cannot be a credential (a webhook URL holds its robot's key)."""
    parts = []
    for err in exc.errors():
        if not err["loc"]:  # a check across settings: its message names them
            parts.append("setting " + err["msg"].removeprefix("Value error, "))
            continue
        field, *inner = [str(p) for p in err["loc"] if p != "[key]"] or ["?"]
        name = ENV_PREFIX + field.upper() + (f"[{'.'.join(inner)}]" if inner else "")
        secret = re.search(r"secret|token|password|key|url", field)
        shown = (
            ""
            if secret or isinstance(err.get("input"), dict | list)
            else (f" (got {err.get('input')!r})")
        )
        parts.append(f"setting {name}: {err['msg'].removeprefix('Value error, ')}{shown}")
    return "; ".join(parts)


class Settings(BaseSettings):
    # finite numbers only: FIREWATCH_NOTICE_TIMEOUT_S=inf or =nan is a typo, never meant
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", allow_inf_nan=False
    )

    def __init__(self, **values: Any) -> None:
        """Refuses a bad setting with :class:`SettingsError`, whose one line names it, so that
        start-up stops with that line rather than a traceback."""
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise SettingsError(describe_settings_error(exc)) from None
        except UnparsableSetting as exc:  # a JSON setting that is no JSON
            field = re.search(r'field "(\w+)"', str(exc))
            name = ENV_PREFIX + (field.group(1).upper() if field else "?")
            raise SettingsError(f"setting {name}: not valid JSON") from None

    host: str = Field(
        "127.0.0.1",
        description="Address the web app listens on (also "
        "`--host`); a service's own /metrics listens on it too.",
    )
    port: int = Field(
        8000,
        ge=0,
        le=65535,
        description="Port of the web app, its JSON API and "
        "(`firewatch up`, `firewatch web`) its /metrics (also `--port`).",
    )
    data_dir: Path = Field(
        Path("firewatch-data"),
        description="All local state lives here: the "
        "SQLite databases, gateway outboxes, ingest spool (also `--data-dir`).",
    )

    mqtt_url: str | None = Field(
        None,
        description="`mqtt://[user:password@]host:port` of a real broker (Mosquitto, EMQX), "
        "or `mqtts://…` (port 8883 by default) over TLS with the broker's certificate checked. "
        "Unset: an embedded broker (amqtt) runs in-process.",
    )
    mqtt_ca_file: Path | None = Field(
        None,
        description="CA certificate (PEM) that signed an `mqtts://` broker's certificate, for "
        "a private CA; unset: the system's trusted CAs.",
    )
    mqtt_embedded_port: int = Field(
        0, ge=0, le=65535, description="Port of the embedded broker; 0 = free port."
    )
    # Replicas of `firewatch ingest` and `firewatch alerts` split the site's gateways, each on
    # a persistent session of its own (firewatch.partition); `firewatch up` runs one of each.
    consumer_partitions: int = Field(
        1,
        ge=1,
        le=1024,
        description="Replicas of this consumer (ingest or alerts) sharing the site's gateways; "
        "each takes the gateways whose id hashes (CRC-32) to its FIREWATCH_CONSUMER_PARTITION, "
        "on a persistent MQTT session of its own (`fw-ingest-p0of2`).",
    )
    consumer_partition: int = Field(
        0,
        ge=0,
        description="This replica's partition, 0 to FIREWATCH_CONSUMER_PARTITIONS - 1.",
    )
    # Alert replicas hold their partitions by leases in the database, and take over the
    # partitions of a replica that went away (firewatch.leases); ingest's stay static.
    alerts_lease_s: float = Field(
        10.0,
        ge=0,
        le=300,
        allow_inf_nan=False,
        description="With several alert partitions: how long a replica's lease on a partition "
        "lasts unrenewed; a replica that goes away has its partitions taken over after about "
        "this long (it stops consuming a quarter of it earlier). 0: static partitions, no "
        "takeover.",
    )

    database_url: str | None = Field(
        None,
        description="SQLAlchemy async URL (`postgresql+asyncpg://…`); unset: SQLite in "
        "data_dir/firewatch.db. The alert side writes through the same database's synchronous "
        "driver (pysqlite, psycopg) on a thread of its own.",
    )
    influx_url: OptionalWebUrl = Field(
        None,
        description="InfluxDB 2/3 URL (v2 write API); unset: the SQLite time-series store "
        "in the data dir. InfluxDB keeps readings for its bucket's retention.",
    )
    influx_token: str = Field("", description="InfluxDB API token.")
    influx_org: str = Field("firewatch", description="InfluxDB organisation.")
    influx_bucket: str = Field("firewatch", description="InfluxDB bucket readings go to.")
    timeseries_raw_days: float = Field(
        7,
        gt=0,
        le=MAX_KEEP_DAYS,
        description="SQLite store: days raw readings are kept before being rolled up.",
    )
    timeseries_rollups: Annotated[dict[int, float], AfterValidator(_rollup_tiers)] = Field(
        {60: 90, 3600: 730},
        description="SQLite store: aggregate tiers (mean, min, max, count per interval), interval "
        'in seconds -> days kept (JSON in the environment, e.g. {"60": 90, "3600": 730}).',
    )
    timeseries_compact_every_s: float = Field(
        600,
        gt=0,
        le=86400,
        description="SQLite store: how often ingest rolls up and expires old rows; trends read "
        "raw and rolled-up rows together.",
    )

    site_file: Path = Field(
        SITES_DIR / "demo-county.yaml",
        description="The site file: institutions, gateways, devices, bureau (also `--site`).",
    )
    profiles_dir: Path = Field(PROFILES_DIR, description="Device profile YAML files.")
    simulate: bool = Field(
        True,
        description="Run device simulators for the site's simulated endpoints (demo; "
        "`--no-simulate` turns them off).",
    )
    gateway_outbox_max_messages: int = Field(
        1_000_000,
        ge=1,
        le=100_000_000,
        description="Messages a gateway keeps for an absent broker; beyond, the oldest routine "
        "ones are dropped (counted in `firewatch_gateway_outbox_dropped`).",
    )

    wecom_webhook_url: OptionalWebUrl = Field(
        None,
        description="WeChat Work group-robot webhook used for institutions that name none "
        "(https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=KEY).",
    )
    notice_channel: NoticeChannel = Field(
        "wecom_robot",
        description="Channel notices go out on: wecom_robot (to the institution's "
        "robot), aliyun_sms / tencent_sms (its duty person's mobile), wechat_oa (their openid). "
        "Fire-class alarms go out on several at once (the site file's `dispatch:`).",
    )
    notice_fallback_channel: NoticeChannel | None = Field(
        None, description="Channel that takes over a notice its channel keeps failing to send."
    )
    notice_fallback_after_attempts: int = Field(
        3,
        ge=1,
        le=100,
        description="Failed sends of a notice before it goes out, once, on "
        "FIREWATCH_NOTICE_FALLBACK_CHANNEL.",
    )
    # at most an hour: a notice that found no way out for longer is no longer an alarm notice
    notice_fallback_after_s: float = Field(
        120,
        ge=0,
        le=3600,
        description="Or this long after the notice was stored, whichever comes first (at most "
        "an hour: a notice that found no way out for longer is no longer an alarm notice).",
    )
    # at most ten minutes: the window holds alarm notices back
    notice_storm_window_s: float = Field(
        60,
        ge=0,
        le=600,
        description="Storm control: alarms of one institution within this "
        "window after a notice are sent as one summary at its end (0: off; at most ten minutes, "
        "as the window holds alarm notices back). One-key alarms always go out at once.",
    )
    notice_timeout_s: float = Field(
        10, gt=0, le=120, description="HTTP time-out of one notice send."
    )
    aliyun_sms_access_key_id: str | None = Field(
        None,
        description="Alibaba Cloud SMS (SendSms) AccessKey ID; set: the aliyun_sms channel exists.",
    )
    aliyun_sms_access_key_secret: str = Field("", description="Alibaba Cloud AccessKey secret.")
    aliyun_sms_sign_name: str = Field("", description="Registered SMS signature (签名).")
    aliyun_sms_template_code: str = Field(
        "",
        description="Registered SMS template (SMS_…); its variables are the notice's "
        "(institution, location, device, alarm, reading, advice, time).",
    )
    aliyun_sms_endpoint: WebUrl = Field(
        "https://dysmsapi.aliyuncs.com", description="Alibaba Cloud SMS API endpoint."
    )
    tencent_sms_secret_id: str | None = Field(
        None,
        description="Tencent Cloud SMS (SendSms) SecretId; set: the tencent_sms channel exists.",
    )
    tencent_sms_secret_key: str = Field("", description="Tencent Cloud SecretKey.")
    tencent_sms_sdk_app_id: str = Field("", description="SMS application id (SdkAppId).")
    tencent_sms_sign_name: str = Field("", description="Registered SMS signature (签名).")
    tencent_sms_template_id: str = Field("", description="Registered SMS template id.")
    tencent_sms_template_params: Annotated[list[str], AfterValidator(_known_variables)] = Field(
        ["institution", "location", "device", "alarm", "reading", "advice"],
        description="The template's {1}, {2}, … in order (names as in alerts.notices).",
    )
    tencent_sms_region: str = Field("ap-guangzhou", description="Tencent Cloud region.")
    tencent_sms_endpoint: WebUrl = Field(
        "https://sms.tencentcloudapi.com", description="Tencent Cloud SMS API endpoint."
    )
    wechat_oa_app_id: str | None = Field(
        None,
        description="WeChat Official Account AppID for template messages to a person's "
        "`wechat_openid`; set: the wechat_oa channel exists.",
    )
    wechat_oa_app_secret: str = Field("", description="Official Account AppSecret.")
    wechat_oa_template_id: str = Field("", description="Template message id.")
    wechat_oa_template_keys: Annotated[dict[str, str], AfterValidator(_template_keys)] = Field(
        {
            "institution": "thing1",
            "alarm": "thing2",
            "location": "thing3",
            "reading": "thing4",
            "time": "time5",
        },
        description="Notice variable -> the template's keyword (JSON in the environment).",
    )
    wechat_oa_endpoint: WebUrl = Field(
        "https://api.weixin.qq.com", description="WeChat API endpoint."
    )
    # voice calls (issue 14 §4): fire-class alarms call the duty person, then the next on the
    # institution's call list while nobody answers (alerts.channels.aliyun_vms / tencent_vms)
    aliyun_vms_access_key_id: str | None = Field(
        None,
        description="Alibaba Cloud voice (SingleCallByTts) AccessKey ID; set: the aliyun_vms "
        "channel exists.",
    )
    aliyun_vms_access_key_secret: str = Field("", description="Its AccessKey secret.")
    aliyun_vms_tts_code: str = Field(
        "",
        description="Approved TTS template (TTS_…); its variables: institution, location, "
        "alarm, reading (docs/dispatch.md).",
    )
    aliyun_vms_show_number: str = Field(
        "", description="Number shown to the callee (bought for the account); empty: public mode."
    )
    aliyun_vms_endpoint: WebUrl = Field(
        "https://dyvmsapi.aliyuncs.com", description="Alibaba Cloud voice API endpoint."
    )
    tencent_vms_secret_id: str | None = Field(
        None,
        description="Tencent Cloud voice message (SendTtsVoice) SecretId; set: the tencent_vms "
        "channel exists.",
    )
    tencent_vms_secret_key: str = Field("", description="Its SecretKey.")
    tencent_vms_sdk_app_id: str = Field("", description="Voice application id (VoiceSdkAppid).")
    tencent_vms_template_id: str = Field(
        "",
        description="Approved voice template id; its {1} to {4}: institution, location, alarm, "
        "reading (docs/dispatch.md).",
    )
    tencent_vms_region: str = Field("ap-guangzhou", description="Tencent Cloud region.")
    tencent_vms_endpoint: WebUrl = Field(
        "https://vms.tencentcloudapi.com", description="Tencent Cloud voice API endpoint."
    )
    voice_play_times: int = Field(2, ge=1, le=3, description="Times a call plays its message.")
    # long enough for a call to ring out (about a minute) and its record to be written; short
    # enough that the next person is called within minutes
    voice_result_wait_s: float = Field(
        120,
        ge=10,
        le=600,
        description="A call with no result from the provider this long after it was placed is "
        "taken as unanswered: the next person on the call list is called.",
    )
    iot_hazard_deadline_hours: float = Field(
        24,
        gt=0,
        le=366 * 24,
        description="Rectification deadline given to ledger entries raised by IoT alarms.",
    )
    # shielding and test mode (firewatch.device_modes): bounded, so that nobody silences a
    # device for good by a typo; GB/T 45839 5.8.1 asks for stated conditions
    device_mode_max_hours: float = Field(
        72,
        ge=1,
        le=30 * 24,
        description="Longest a device may be shielded (屏蔽) or in test mode (测试) at a time.",
    )
    # how soon an ended mode is written back and an alarm still open is told (at the latest)
    device_mode_sweep_s: float = Field(
        2,
        ge=0.1,
        le=60,
        description="How often the alert service ends shielding and test modes whose time is "
        "up, or that were cancelled, and notifies the alarms still open on those devices.",
    )
    # what a gateway says is checked (firewatch.admission) and its link watched (alerts.links)
    gateway_clock_max_ahead_s: float = Field(
        300,
        gt=0,
        le=86400,
        allow_inf_nan=False,
        description="A gateway message stamped more than this ahead of its receipt is "
        "dead-lettered (a press or device event is applied as received instead).",
    )
    gateway_max_age_days: float = Field(
        30,
        gt=0,
        le=3650,
        allow_inf_nan=False,
        description="A gateway message stamped more than this before its receipt is "
        "dead-lettered: older than any outbox backlog (a press is applied as received).",
    )
    gateway_silent_after_s: float = Field(
        60,
        gt=0,
        le=86400,
        allow_inf_nan=False,
        description="A gateway not heard of for this long (no heartbeat, no message) is a link "
        "fault alarm (网关通信中断) for its institution; a gateway's silent_after_s in the site "
        "file wins.",
    )
    monitor_silent_after_s: float = Field(
        60,
        gt=0,
        le=86400,
        allow_inf_nan=False,
        description="The web process tells the bureau 【监控中断】 when the "
        "alert service has not recorded its own heartbeat (every quarter of this, at most 5 s) "
        "for this long.",
    )
    applied_keep_hours: float = Field(
        24,
        gt=0,
        description="How long the alert service remembers which gateway messages it "
        "applied, to recognise a redelivery (one row per message, pruned every 10 s). A broker "
        "away longer than "
        "this could redeliver a message it has forgotten.",
    )
    dead_letter_keep_days: float = Field(
        30,
        gt=0,
        le=3650,
        allow_inf_nan=False,
        description="How long a consumer keeps the messages it set aside (dead letters, the "
        "first 64 KiB of each) before forgetting them; each consumer prunes its own every hour.",
    )

    log_format: Literal["text", "json"] = Field(
        "text",
        description="text: lines for a terminal; json: one JSON object per line (`ts`, "
        "`level`, `logger`, `message`).",
    )
    metrics_port: int = Field(
        9464,
        ge=0,
        le=65535,
        description="Prometheus /metrics of a service run on its own (firewatch gateway, ingest, "
        "alerts), on FIREWATCH_HOST; `firewatch up` and `firewatch web` serve it on the web port.",
    )
    instance: str = Field(
        default_factory=socket.gethostname,
        description="Names this replica (its change notices' MQTT client id, its service "
        "heartbeat, its ingest spool file); default: the host name.",
    )

    env: Literal["development", "production"] = Field(
        "development",
        description="production: refuse to start with the default secret key or demo accounts.",
    )
    secret_key: str = Field(
        DEFAULT_SECRET_KEY,
        description="Signs login tokens (HS256); 32+ random characters "
        "(the default is a published development key, refused in production).",
    )
    # one-tap confirmation links in notices (alerts.confirm_links): their own secret, so that
    # one leaked secret neither forges logins nor confirms alarms
    confirm_link_secret: str | None = Field(
        None,
        min_length=32,
        description="Signs the one-tap confirmation links in notices; 32+ random characters, "
        "required in production (elsewhere unset: derived from FIREWATCH_SECRET_KEY).",
    )
    confirm_link_hours: float = Field(
        24,
        gt=0,
        le=24 * 7,
        description="How long a notice's one-tap confirmation link works after the notice was "
        "stored (at most a week).",
    )
    public_url: OptionalWebUrl = Field(
        None,
        description="The address people's phones reach the web app at, for the links in "
        "notices (keep it short: SMS length); unset: http://FIREWATCH_HOST:FIREWATCH_PORT.",
    )
    token_hours: float = Field(
        12,
        gt=0,
        le=24 * 31,
        description="How long a console login lasts; a live-update stream ends with it.",
    )
    # failed logins, counted in each web process: beyond either limit within the window, a
    # login answers 429 with Retry-After, whatever the password
    login_failures_per_account: int = Field(
        5,
        ge=1,
        le=1000,
        description="Failed logins of one account allowed within "
        "FIREWATCH_LOGIN_FAILURE_WINDOW_S (counted in each web process); then a login answers "
        "429 with Retry-After, whatever the password.",
    )
    login_failures_per_address: int = Field(
        20,
        ge=1,
        le=100_000,
        description="Failed logins from one client address allowed "
        "within the window; then 429 with Retry-After.",
    )
    login_failure_window_s: float = Field(
        300, gt=0, le=86_400, description="The window failed logins are counted in."
    )
    # Prometheus's credentials for the web port's /metrics (bearer token); logged-in admins
    # may read it too, anonymous readers never
    metrics_token: str | None = Field(
        None,
        min_length=32,
        description="Bearer token a Prometheus scrape of the web app's "
        "/metrics and the detailed /api/health may give instead of an admin login.",
    )
    demo_password: str = Field(
        "firewatch-demo",
        description="Password of the demo accounts `firewatch up` creates (outside production "
        "only).",
    )
    map_tile_url: str | None = Field(
        None,
        description="Optional tile layer (Leaflet URL template, {key} is replaced by "
        "map_tile_key), e.g. Tianditu or AMap. Unset: the bundled county outline only.",
    )
    map_tile_key: str = Field("", description="Tile service key (Tianditu tk, AMap key).")
    map_tile_coords: Literal["wgs84", "gcj02"] = Field(
        "wgs84",
        description="gcj02 for AMap tiles (stored WGS-84 markers and outline are shifted when "
        "drawn); wgs84 for Tianditu (CGCS2000) and OpenStreetMap-style tiles.",
    )
    map_tile_attribution: str = Field("", description="Attribution shown under the tiles.")
    # the map's device and institution lists are served from ready bytes (firewatch.web.snapshot):
    # a state change rebuilds them at once; what changes without a change notice (last
    # readings) is at most this old
    web_snapshot_max_age_s: float = Field(
        1.0,
        gt=0,
        le=60,
        description="Longest a served device or institution list may be kept before it is "
        "read again (a device's state change is in it at once; its last readings at most this "
        "late).",
    )

    @model_validator(mode="after")
    def _channels_configured(self) -> Settings:
        """A notice channel chosen without its credentials would leave every notice with
        nobody to send it to."""
        for setting in ("notice_channel", "notice_fallback_channel"):
            credential = _CHANNEL_CREDENTIAL.get(getattr(self, setting))
            if credential and not getattr(self, credential):
                raise ValueError(
                    f"{ENV_PREFIX}{setting.upper()}={getattr(self, setting)} needs "
                    f"{ENV_PREFIX}{credential.upper()} and that provider's other "
                    "settings"
                )
        return self

    @model_validator(mode="after")
    def _voice_configured(self) -> Settings:
        """A voice provider turned on without its secret or template would have every call
        refused: fire alarms would ring nobody, found out only at the first fire."""
        needs = {
            "aliyun_vms_access_key_id": ("aliyun_vms_access_key_secret", "aliyun_vms_tts_code"),
            "tencent_vms_secret_id": (
                "tencent_vms_secret_key",
                "tencent_vms_sdk_app_id",
                "tencent_vms_template_id",
            ),
        }
        for switch, required in needs.items():
            missing = [f"{ENV_PREFIX}{n.upper()}" for n in required if not getattr(self, n)]
            if getattr(self, switch) and missing:
                raise ValueError(
                    f"{ENV_PREFIX}{switch.upper()} is set, so {', '.join(missing)} must be too"
                )
        return self

    @model_validator(mode="after")
    def _retention(self) -> Settings:
        """The time-series tiers fit together (each divides the coarsest, none is kept for less
        time than raw rows); the rules live with the compactor that relies on them."""
        from ingest.retention import RetentionPolicy  # imported here: it imports Settings

        RetentionPolicy.from_settings(self)
        return self

    @model_validator(mode="after")
    def _partition_exists(self) -> Settings:
        if self.consumer_partition >= self.consumer_partitions:
            last = self.consumer_partitions - 1
            raise ValueError(
                f"{ENV_PREFIX}CONSUMER_PARTITION={self.consumer_partition}: the partitions are "
                f"numbered 0 to {ENV_PREFIX}CONSUMER_PARTITIONS - 1 = {last}"
            )
        return self

    @model_validator(mode="after")
    def _lease_long_enough(self) -> Settings:
        if 0 < self.alerts_lease_s < 1:
            raise ValueError(
                f"{ENV_PREFIX}ALERTS_LEASE_S={self.alerts_lease_s}: 0 (no takeover) or at least "
                "1 s, which a replica renews four times"
            )
        return self

    @model_validator(mode="after")
    def _broker_reachable_as_written(self) -> Settings:
        if self.mqtt_ca_file is not None and not self.mqtt_ca_file.is_file():
            raise ValueError(f"{ENV_PREFIX}MQTT_CA_FILE={self.mqtt_ca_file}: no such file")
        _ = self.broker
        return self

    @property
    def broker(self) -> BrokerAddress | None:
        """The real broker every service shares; None: the embedded one."""
        if not self.mqtt_url:
            return None
        return BrokerAddress.from_url(self.mqtt_url, self.mqtt_ca_file)

    @property
    def effective_confirm_link_secret(self) -> str:
        return self.confirm_link_secret or f"{self.secret_key}/confirm-links"

    @property
    def effective_public_url(self) -> str:
        return str(self.public_url or f"http://{self.host}:{self.port}")

    @property
    def partition(self) -> Partition:
        """This consumer replica's share of the site's gateways."""
        return Partition(self.consumer_partition, self.consumer_partitions)

    @property
    def dead_letter_keep(self) -> timedelta:
        return timedelta(days=self.dead_letter_keep_days)

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "firewatch.db"

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.sqlite_path.resolve()}"
