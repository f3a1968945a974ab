"""The words duty staff read on their phones, whatever the channel.

A notice's body is a channel-neutral :class:`NoticeMessage` (institution, where the device hangs,
what it measured against which set point, when, what to do now), stored with the notice so
that the fallback channel can say the same thing in its own form: markdown for a WeChat Work
group robot, template variables for SMS and Official Account template messages.  Every form
carries the notice number, which is what providers and people quote back.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from os.path import commonprefix
from typing import Any, Literal

from pydantic import BaseModel

from alerts.rules import Verdict
from firewatch.db import Alarm, Institution
from firewatch.profiles import AlarmRule, Severity

#: China Standard Time; China keeps no daylight saving, so a fixed offset is exact
CST = timezone(timedelta(hours=8), "CST")
WECOM_MARKDOWN_LIMIT = 4096
#: what one SMS template variable may hold (Alibaba Cloud: 35 characters for notice templates;
#: Tencent Cloud is no looser) - to confirm against the signed templates
SMS_VARIABLE_LIMIT = 35
#: what one voice (TTS) template variable may hold: short enough to be heard, and inside both
#: providers' rules (Alibaba Cloud limits each TtsParam variable; Tencent Cloud the whole call
#: to 350 characters) - to confirm against the signed templates
VOICE_VARIABLE_LIMIT = 20
#: the variables :func:`voice_variables` fills, in the order a voice template says them
VOICE_VARIABLES = ("institution", "location", "alarm", "reading")
#: the variables :func:`template_variables` fills: all an SMS or template message can name
#: (the settings that map templates to them are checked against this list at start-up)
TEMPLATE_VARIABLES = (
    "institution",
    "location",
    "device",
    "alarm",
    "reading",
    "time",
    "advice",
    "confirm",
)
#: where a one-tap confirmation link's token follows the public address (alerts.confirm_links)
LINK_PATH = "/c/"
#: the ``confirm`` variable of a notice that has no link (a storm summary: no one alarm)
NO_LINK = "-"


def local_time(ts: datetime) -> str:
    """China time; an instant in the last hours of the calendar (a deadline of "never", in year
    9999) has no China time datetime can hold, and is shown in UTC."""
    try:
        return ts.astimezone(CST).strftime("%Y-%m-%d %H:%M:%S")
    except OverflowError:
        return ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class NoticeMessage(BaseModel):
    """What one notice says.  ``kind`` rise: an open alarm of a ladder reached a higher level
    (预警 → 报警, gas low → high), ``title`` the level reached, ``label`` the rise
    (…低限报警→高限报警).  ``kind`` summary: several alarms of one institution in a
    storm window, one ``items`` line each, sent at ``window_end``, from the ``devices`` at the
    ``places`` it names.  ``kind`` escalation: an alarm nobody acknowledged, an overdue or
    re-check-due ledger entry (``label`` names which, the ``reason`` says why now; see
    ``alerts.escalation_notices``).

    ``severity`` and ``category`` are those of the level told of (for a rise, the level
    reached): what a dispatch policy keys on."""

    kind: Literal["raise", "rise", "clear", "summary", "escalation"]
    label: str = ""
    severity: str = Severity.ALARM.value
    #: the rule's hazard category: with ``severity`` it says whether the alarm is fire-class
    #: (firewatch.dispatch_policy); empty in notices stored before it was kept
    category: str = ""
    institution: str
    title: str
    location: str
    device: str = ""
    time: str
    reading: str = ""
    set_point: str = ""
    reason: str = ""
    advice: str = ""
    contact: str = ""
    immediate: bool = False
    items: list[str] = []
    places: list[str] = []
    devices: list[str] = []
    window_end: datetime | None = None
    #: the one-tap confirmation link, added when it is sent (alerts.notifier), never stored
    link: str = ""


def _figure(value: float | None, unit: str) -> str:
    return "" if value is None else f"{value:g} {unit}".strip()


def raise_message(
    institution: Institution,
    where: str,
    what: str,
    rule: AlarmRule,
    verdict: Verdict,
    reason: str,
    ts: datetime,
) -> NoticeMessage:
    """An alarm raised on ``what`` (a device, a gateway: 名称（id）) hanging at ``where``."""
    return NoticeMessage(
        kind="raise",
        severity=rule.severity.value,
        category=rule.category.value,
        institution=institution.name,
        title=rule.title_zh,
        location=f"{institution.township} · {where}",
        device=what,
        time=local_time(ts),
        reading=_figure(verdict.value, rule.unit),
        set_point=_figure(verdict.set_point, rule.unit),
        reason=reason,
        advice=rule.advice_zh,
        immediate=rule.immediate,
        contact=f"{institution.safety_officer_name} {institution.safety_officer_phone}",
    )


def rise_message(
    raised: NoticeMessage, before: AlarmRule, after: AlarmRule, note: str
) -> NoticeMessage:
    """An open alarm risen from level ``before`` to ``after``: what ``raised`` (the raise
    notice the new level would have made) says, labelled with the rise (…低限报警→高限报警)."""
    return raised.model_copy(
        update={
            "kind": "rise",
            "label": rise_title(before.title_zh, after.title_zh),
            "reason": note,
        }
    )


def rise_title(before: str, after: str) -> str:
    """``可燃气体浓度低限报警→高限报警``: the common start said once."""
    same = len(commonprefix([before, after]))
    return f"{before}→{after[same:] or after}"


def clear_message(
    institution: Institution,
    where: str,
    what: str,
    rule: AlarmRule,
    verdict: Verdict,
    alarm: Alarm,
) -> NoticeMessage:
    return NoticeMessage(
        kind="clear",
        institution=institution.name,
        title=f"{alarm.title}已恢复",
        location=f"{institution.township} · {where}",
        device=what,
        time=local_time(alarm.raised_at),
        reading=_figure(verdict.value, rule.unit),
        immediate=rule.immediate,
    )


def gateway_names(gateway_id: str) -> tuple[str, str]:
    """Where a gateway's link fault is and what, as a device's alarm names its device."""
    return f"网关 {gateway_id}", f"物联网网关（{gateway_id}）"


def summary_line(message: NoticeMessage) -> str:
    """One alarm of a storm, as a line of the summary notice."""
    level = "恢复" if message.kind == "clear" else _level(message)
    reading = f" {message.reading}" if message.reading else ""
    return f"【{level}】{message.location} {_headline(message)}{reading}（{message.device}）"


def summary_message(first: NoticeMessage, window_end: datetime) -> NoticeMessage:
    """A storm summary that starts with ``first`` and is sent at ``window_end``."""
    summary = NoticeMessage(
        kind="summary",
        institution=first.institution,
        title="",
        location="",
        time=first.time,
        contact=first.contact,
        window_end=window_end,
    )
    fold(summary, first)
    return summary


def fold(summary: NoticeMessage, message: NoticeMessage) -> None:
    """``message`` as one more line of ``summary``, its device and place counted once each:
    one detector's low and high alarms are one place, not "多处"."""
    summary.items.append(summary_line(message))
    for seen, new in ((summary.places, message.location), (summary.devices, message.device)):
        if new and new not in seen:
            seen.append(new)
    if len(summary.places) == 1:
        summary.location = summary.places[0]
        summary.advice = "短时间内同一处多条报警：请立即到场核实，必要时拨打119并组织疏散。"
    else:
        summary.location = f"{len(summary.places)} 处"
        summary.advice = (
            f"短时间内{len(summary.places)} 处报警：请立即到场逐一核实，必要时拨打119并组织疏散。"
        )


def summary_title(message: NoticeMessage) -> str:
    """``短时间内2 条报警、1 条升级（1 台设备，1 处）``."""
    kinds = [
        "恢复" if line.startswith("【恢复】") else "升级" if line.startswith("【升级】") else "报警"
        for line in message.items
    ]
    counts = [f"{kinds.count(what)} 条{what}" for what in ("报警", "升级", "恢复") if what in kinds]
    title = "短时间内" + "、".join(counts)
    if message.places:  # a summary stored before places were counted has none
        title += f"（{len(message.devices)} 台设备，{len(message.places)} 处）"
    return title


def _headline(message: NoticeMessage) -> str:
    """What a notice is about, in a line: a rise says from which level to which."""
    return message.label if message.kind == "rise" else message.title


#: what a raise notice calls its severity
SEVERITY_ZH: dict[str, str] = {
    Severity.ALARM: "报警",
    Severity.WARNING: "预警",
    Severity.FAULT: "故障",
}


def _level(message: NoticeMessage) -> str:
    return {
        "raise": SEVERITY_ZH.get(message.severity, "报警"),
        "rise": "升级",
        "clear": "恢复",
        "summary": "汇总",
        "escalation": message.label,
    }[message.kind]


def wecom_markdown(message: NoticeMessage, notice_id: int) -> dict[str, Any]:
    """The WeChat Work group-robot body (markdown, at most 4,096 bytes)."""
    color = {
        "raise": "comment" if message.severity == Severity.FAULT else "warning",
        "rise": "warning",
        "clear": "info",
        "summary": "warning",
        "escalation": "warning",
    }[message.kind]
    title = summary_title(message) if message.kind == "summary" else _headline(message)
    head = f'### <font color="{color}">【{_level(message)}】{message.institution}：{title}</font>'
    if message.kind == "summary":
        lines = [head, *(f"> {item}" for item in message.items)]
    else:
        lines = [
            head,
            f"> 位置：{message.location}",
            *([f"> 设备：{message.device}"] if message.device else []),
            *([f"> 现为：{message.title}"] if message.kind == "rise" else []),
            f"> {'报警时间' if message.kind == 'clear' else '时间'}：{message.time}",
        ]
        if message.reading and message.kind in ("raise", "rise"):
            lines.append(
                f'> 读数：<font color="warning">{message.reading}</font>'
                f"（设定值 {message.set_point}）"
            )
        elif message.reading:
            lines.append(f"> 当前读数：{message.reading}")
        if message.reason:
            lines.append(f"> 原因：{message.reason}")
    text = "\n".join(lines)
    if message.kind == "clear":
        text += "\n\n请核实隐患已消除；报警记录仍需在系统中确认并关闭。"
    else:
        if message.advice:
            text += f"\n\n**请立即处置**：{message.advice}"
        text += f"\n\n责任人：{message.contact}"
        if message.kind != "escalation":
            text += "\n请值班人员在系统中确认报警；无人确认将逐级上报机构负责人和民政局。"
    footer = f"\n通知编号：{notice_id}"
    if message.link:
        footer = f"\n\n[一键确认报警（无需登录）]({message.link})" + footer
    encoded = text.encode()
    room = WECOM_MARKDOWN_LIMIT - len(footer.encode())
    if len(encoded) > room:
        text = encoded[: room - 3].decode(errors="ignore") + "…"
    return {"msgtype": "markdown", "markdown": {"content": text + footer}}


def template_variables(message: NoticeMessage) -> dict[str, str]:
    """The variables of SMS and template-message templates, each within the SMS limit.

    Suggested SMS template (to be approved by the provider):
    ``${institution}${location}${device}：${alarm}，读数${reading}。${advice}
    确认：https://fw.example.cn/c/${confirm}``
    """
    if message.kind == "summary":
        devices = (
            f"{len(message.devices)} 台设备" if message.devices else f"{len(message.items)} 项"
        )
        alarm, device, reading = summary_title(message), devices, "详见系统"
    else:
        alarm, device = f"【{_level(message)}】{_headline(message)}", message.device
        reading = (message.reason if message.kind == "escalation" else message.reading) or "无"
        if message.set_point:
            reading += f"（设定值{message.set_point}）"
    values = {
        "institution": message.institution,
        "location": message.location,
        "device": device,
        "alarm": alarm,
        "reading": reading,
        "time": message.time,
        "advice": message.advice or "请核实并在系统中关闭报警",
        # the link's token only: the template writes the fixed address before it, as the
        # providers want links in templates (…确认：https://fw.example.cn/c/${confirm})
        "confirm": message.link.rpartition(LINK_PATH)[2] or NO_LINK,
    }
    return {k: _cut(v, SMS_VARIABLE_LIMIT) for k, v in values.items()}


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def voice_variables(message: NoticeMessage) -> dict[str, str]:
    """The variables of the voice (TTS) template: who, where, what; no link, no figures.

    Suggested template (to be approved by the provider):
    ``${institution}${location}发生${alarm}，读数${reading}，请立即到场处置并在系统中确认。``
    """
    alarm = summary_title(message) if message.kind == "summary" else message.title
    values = {
        "institution": message.institution,
        "location": message.location,
        "alarm": alarm,
        "reading": message.reading or "无",
    }
    return {k: _cut(v, VOICE_VARIABLE_LIMIT) for k, v in values.items()}
