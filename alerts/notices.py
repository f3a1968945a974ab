"""The words duty staff read on their phones: Chinese notices for WeChat Work group robots.

A notice names the institution, where the device hangs, what it measured against which set
point, when, and what to do now.  Markdown bodies stay under the robot's 4,096-byte limit.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from alerts.rules import Verdict
from firewatch.db import Alarm, Device, Institution
from firewatch.profiles import AlarmRule, DeviceProfile, Severity

#: China Standard Time; China keeps no daylight saving, so a fixed offset is exact
CST = timezone(timedelta(hours=8), "CST")
WECOM_MARKDOWN_LIMIT = 4096


def local_time(ts: datetime) -> str:
    return ts.astimezone(CST).strftime("%Y-%m-%d %H:%M:%S")


def _reading(verdict: Verdict, rule: AlarmRule) -> str:
    if verdict.value is None:
        return ""
    return f"\n> 读数：<font color=\"warning\">{verdict.value:g} {rule.unit}</font>" \
           f"（设定值 {verdict.set_point:g} {rule.unit}）"


def _markdown(content: str) -> dict[str, Any]:
    encoded = content.encode()
    if len(encoded) > WECOM_MARKDOWN_LIMIT:
        content = encoded[: WECOM_MARKDOWN_LIMIT - 3].decode(errors="ignore") + "…"
    return {"msgtype": "markdown", "markdown": {"content": content}}


def raise_notice(
    institution: Institution,
    device: Device,
    profile: DeviceProfile,
    rule: AlarmRule,
    verdict: Verdict,
    reason: str,
    ts: datetime,
) -> dict[str, Any]:
    level = "【报警】" if rule.severity is Severity.ALARM else "【故障】"
    color = "warning" if rule.severity is Severity.ALARM else "comment"
    lines = [
        f"### <font color=\"{color}\">{level}{institution.name}：{rule.title_zh}</font>",
        f"> 位置：{institution.township} · {device.location}",
        f"> 设备：{profile.title_zh}（{device.id}）",
        f"> 时间：{local_time(ts)}",
    ]
    text = "\n".join(lines) + _reading(verdict, rule)
    if reason:
        text += f"\n> 原因：{reason}"
    if rule.advice_zh:
        text += f"\n\n**请立即处置**：{rule.advice_zh}"
    text += (
        f"\n\n责任人：{institution.safety_officer_name} {institution.safety_officer_phone}"
        "\n请值班人员在系统中确认报警；无人确认将逐级上报机构负责人和民政局。"
    )
    return _markdown(text)


def clear_notice(
    institution: Institution,
    device: Device,
    profile: DeviceProfile,
    rule: AlarmRule,
    verdict: Verdict,
    alarm: Alarm,
) -> dict[str, Any]:
    text = (
        f"### <font color=\"info\">【恢复】{institution.name}：{rule.title_zh}已恢复</font>\n"
        f"> 位置：{institution.township} · {device.location}\n"
        f"> 设备：{profile.title_zh}（{device.id}）\n"
        f"> 报警时间：{local_time(alarm.raised_at)}"
    )
    if verdict.value is not None:
        text += f"\n> 当前读数：{verdict.value:g} {rule.unit}"
    text += "\n\n请核实隐患已消除；报警记录仍需在系统中确认并关闭。"
    return _markdown(text)
