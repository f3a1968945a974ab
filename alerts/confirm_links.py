"""One-tap confirmation links (§5): a short link in each notice, signed for its alarm and person.

A link is ``{public_url}/c/{token}``; the token names the notice (which names the alarm and
its recipient: a mobile, an openid, a group's robot), when it was issued and a signature
(itsdangerous ``TimestampSigner``, salted for this use), e.g. ``1234.Z5fXvA.q1w2e3r4t5y6u7i8``:
28 characters for a notice number of 4 digits, so an SMS template can carry it as one
variable within the providers' 35 characters.  The signature is HMAC-SHA256 cut to 96 bits:
a forger has one guess per request at 2^-96, far past what a 24-hour link needs, and the short
token keeps the SMS short.

The token of a notice is a pure function of the secret, the notice's number and the time it
was stored: the notifier renders it into what it sends, and the notices list shows the same
link, without either storing it.  It expires ``max_age`` after the notice was stored.

Refusals say why in Chinese (:class:`LinkRefused`): tampered or cut (invalid), expired, or
used for another alarm than its own.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner
from itsdangerous.signer import HMACAlgorithm

from alerts.notices import LINK_PATH
from firewatch.settings import Settings
from firewatch.site import Site

SALT = "firewatch.confirm-link"
#: bytes of the HMAC-SHA256 kept in the token (16 characters of URL-safe base64)
TAG_BYTES = 12

INVALID_ZH = "链接无效：链接不完整或已被改动，请使用通知中的原始链接，或登录系统确认报警。"
EXPIRED_ZH = "链接已过期：请登录系统确认报警，或联系值班室。"
OTHER_ALARM_ZH = "此链接不属于该报警，不能用于确认它。"


class LinkRefused(ValueError):
    """A link that confirms nothing; the message says why, in Chinese, for the person holding
    the phone; ``status`` is the HTTP status the API answers with."""

    def __init__(self, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.status = status


class _ShortHmac(HMACAlgorithm):
    """HMAC-SHA256 cut to :data:`TAG_BYTES`: what keeps the link short (see the module)."""

    def __init__(self) -> None:
        super().__init__(hashlib.sha256)

    def get_signature(self, key: bytes, value: bytes) -> bytes:
        return super().get_signature(key, value)[:TAG_BYTES]


class _SignedAt(TimestampSigner):
    """A signer that stamps a given time (the notice's), not the clock's."""

    def __init__(self, secret: str, at: datetime) -> None:
        super().__init__(secret, salt=SALT, algorithm=_ShortHmac())
        self._at = int(at.timestamp())

    def get_timestamp(self) -> int:
        return self._at


class ConfirmLinks:
    @classmethod
    def from_settings(cls, settings: Settings) -> ConfirmLinks:
        return cls(
            settings.effective_confirm_link_secret,
            settings.effective_public_url,
            timedelta(hours=settings.confirm_link_hours),
        )

    def __init__(self, secret: str, public_url: str, max_age: timedelta) -> None:
        self.secret = secret
        self.public_url = public_url.rstrip("/")
        self.max_age = max_age
        self._verifier = TimestampSigner(secret, salt=SALT, algorithm=_ShortHmac())

    def token(self, notice_id: int, stored_at: datetime) -> str:
        return _SignedAt(self.secret, stored_at).sign(str(notice_id)).decode()

    def url(self, notice_id: int, stored_at: datetime) -> str:
        return f"{self.public_url}{LINK_PATH}{self.token(notice_id, stored_at)}"

    def notice_id(self, token: str) -> int:
        """The notice a token was issued for; LinkRefused if it is forged, cut or expired."""
        try:
            value = self._verifier.unsign(token, max_age=int(self.max_age.total_seconds()))
        except SignatureExpired:
            raise LinkRefused(EXPIRED_ZH, 410) from None
        except BadSignature:
            raise LinkRefused(INVALID_ZH) from None
        return int(value)


def recipient_name(site: Site, institution_id: str, target: str, default_webhook: str) -> str:
    """Who a notice went to, by name, for the audit trail of a confirmation by its link.

    A person's mobile or openid names them; a group robot's webhook names the group (its
    members share the link).  An address the site does not name (changed since) is shown
    masked, never whole: a webhook's key is its credential.
    """
    if not target:
        return "通知收件人"
    people = []
    for i in site.institutions:
        if i.id == institution_id:
            people += [(i.safety_officer, "安全管理人员"), (i.head, "机构负责人")]
            people += [(person, "值班人员") for person in i.duty or []]
            if target in (i.wecom_webhook_url, default_webhook):
                return f"{i.name}值班群"
    if site.bureau is not None:
        people.append((site.bureau.duty, f"{site.bureau.name}值班"))
        if target == site.bureau.wecom_webhook_url:
            return f"{site.bureau.name}值班群"
    for contact, role in people:
        if target in (contact.phone, contact.wechat_openid):
            return f"{contact.name}（{role}）"
    return f"通知收件人 {target[:3]}…{target[-2:]}" if len(target) > 6 else "通知收件人"
