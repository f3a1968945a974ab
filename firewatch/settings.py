"""One settings model for every service: environment variables ``FIREWATCH_*`` or a .env file."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from firewatch.profiles import PROFILES_DIR

SITES_DIR = Path(__file__).resolve().parent.parent / "sites"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FIREWATCH_", env_file=".env", extra="ignore")

    host: str = Field("127.0.0.1", description="Address the web app listens on.")
    port: int = Field(8000, description="Port of the web app and its JSON API.")
    data_dir: Path = Field(Path("firewatch-data"), description="All local state lives here.")

    mqtt_url: str | None = Field(
        None,
        description="mqtt://[user:password@]host:port of a real broker (Mosquitto, EMQX). "
        "Unset: an embedded broker (amqtt) runs in-process.",
    )
    mqtt_embedded_port: int = Field(0, description="Port of the embedded broker; 0 = free port.")
    mqtt_shared_subscriptions: bool | None = Field(
        None,
        description="Use $share/<group>/ subscriptions so replicas split the load. "
        "Unset: on for an external broker, off for the embedded one (it has none).",
    )

    database_url: str | None = Field(
        None, description="SQLAlchemy async URL; unset: SQLite in data_dir/firewatch.db."
    )
    influx_url: str | None = Field(None, description="InfluxDB v2 write URL; unset: SQLite store.")
    influx_token: str = ""
    influx_org: str = "firewatch"
    influx_bucket: str = "firewatch"

    site_file: Path = Field(SITES_DIR / "demo-county.yaml", description="Institutions, devices.")
    profiles_dir: Path = Field(PROFILES_DIR, description="Device profile YAML files.")
    simulate: bool = Field(
        True, description="Run device simulators for the site's simulated endpoints (demo)."
    )

    wecom_webhook_url: str | None = Field(
        None,
        description="WeChat Work group-robot webhook used for institutions that name none "
        "(https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=KEY).",
    )
    iot_hazard_deadline_hours: float = Field(
        24, description="Rectification deadline given to ledger entries raised by IoT alarms."
    )

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "firewatch.db"

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.sqlite_path.resolve()}"
