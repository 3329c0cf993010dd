"""Email: one message through the SMTP relay to the owner's verified address, Reply-To the visitor.

smtplib is blocking, so each send runs in a small dedicated thread pool; every
socket operation is bounded by the delivery timeout. STARTTLS is used whenever
the relay offers it (and a certificate that does not verify fails the send
rather than falling back to plain text); AUTH only when --smtp-user is set.

Headers are built with `email.policy.SMTP`, which refuses CR/LF in any header
value, on top of the single-line validation of the visitor's fields, so the
subject, handle or address cannot add headers or recipients. smtplib
dot-stuffs the body, so a message cannot end the DATA phase early.

When the relay rejects the message its reply code and text pass through (the
spec's "other rejections pass through their own status code and error
message"): a 4xx reply becomes 503 (temporary), a 5xx reply 502, each with
"Email rejected by the mail server: <code> <text>". The text is cleaned first
(`visitor_reason`): every address-like token becomes "<address>", every part
of the owner's address (name parts, domain labels) becomes "<redacted>", and
only printable characters on one line remain; the full reply goes to the log.
Connection failures, timeouts and our own AUTH failures are a plain 502
"Email delivery failed".
"""

from __future__ import annotations

import asyncio
import logging
import re
import smtplib
import ssl
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import formatdate, make_msgid, parseaddr

from contact.errors import DeliveryFailed

log = logging.getLogger("hepgg.contact.email")

FAILED = "Email delivery failed"
MAX_REASON = 200


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    user: str
    password: str
    sender: str  # the From header, e.g. "Hep.gg <no-reply@hep.gg>"
    timeout: float

    @property
    def envelope_from(self) -> str:
        return parseaddr(self.sender)[1] or self.sender

    @property
    def domain(self) -> str:
        return self.envelope_from.rpartition("@")[2] or "localhost"


def build_message(settings: SmtpSettings, to: str, reply_to: str, subject: str, text: str, domain: str) -> EmailMessage:
    msg = EmailMessage(policy=SMTP_POLICY)
    msg["From"] = settings.sender
    msg["To"] = to
    msg["Reply-To"] = reply_to
    msg["Subject"] = f"[{domain}] {subject}" if subject else f"[{domain}] New message from your contact form"
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = make_msgid(domain=settings.domain)
    msg.set_content(
        f"{reply_to} sent you this message through the contact form on https://{domain}/\n"
        f"Reply to this email to answer them directly.\n\n{text}\n"
    )
    return msg


# Anything with an @ in it, with the brackets or quotes around it: "<a.b@c>", "a@b", "@c", "a@".
_ADDRESS_LIKE = re.compile(r"""[<"'(\[]?[^\s<>"'()\[\],;]*@[^\s<>"'()\[\],;]*[>"')\]]?""")


def _owner_words(recipient: str) -> re.Pattern[str] | None:
    """The owner's name parts and domain labels (not the top-level domain), as whole words."""
    local, _, domain = recipient.lower().rpartition("@")
    words = re.split(r"[^a-z0-9]+", local) + domain.split(".")[:-1]
    words = sorted({word for word in words if len(word) >= 2}, key=len, reverse=True)
    if not words:
        return None
    return re.compile(r"(?<![a-z0-9])(?:" + "|".join(map(re.escape, words)) + r")(?![a-z0-9])", re.IGNORECASE)


def visitor_reason(text: str, recipient: str) -> str:
    """A relay's reply text as the visitor may see it: no address, no part of the owner's, one printable line."""
    text = _ADDRESS_LIKE.sub("<address>", text)
    owner_words = _owner_words(recipient)
    if owner_words is not None:
        text = owner_words.sub("<redacted>", text)
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    return " ".join(text.split())[:MAX_REASON]


def rejection(code: int, text: bytes | str, recipient: str) -> DeliveryFailed:
    """The visitor's answer to a relay's rejection; the reply as sent goes to the log (it has no secret of ours)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    log.warning("mail server rejected the message: %s %s", code, ascii(text))  # ascii(): one line, escaped
    status = 503 if 400 <= code < 500 else 502
    reason = visitor_reason(text, recipient)
    return DeliveryFailed(f"Email rejected by the mail server: {code} {reason}".rstrip(), status=status)


class EmailSender:
    def __init__(self, settings: SmtpSettings, max_workers: int = 8):
        self.settings = settings
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="smtp")

    async def send(self, to: str, reply_to: str, subject: str, text: str, domain: str) -> str:
        """Deliver and return the Message-ID; DeliveryFailed when the relay did not accept it."""
        msg = build_message(self.settings, to, reply_to, subject, text, domain)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self._send_blocking, msg, to)
        return str(msg["Message-ID"])

    def _send_blocking(self, msg: EmailMessage, to: str) -> None:
        s = self.settings
        try:
            with smtplib.SMTP(s.host, s.port, local_hostname=s.domain, timeout=s.timeout) as smtp:
                smtp.ehlo()
                if smtp.has_extn("starttls"):
                    smtp.starttls(context=ssl.create_default_context())
                    smtp.ehlo()
                if s.user:
                    smtp.login(s.user, s.password)
                smtp.send_message(msg, from_addr=s.envelope_from, to_addrs=[to])
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()))
            raise rejection(code, text, to) from None
        except smtplib.SMTPAuthenticationError as exc:
            log.error("mail server refused our credentials: %s", exc.smtp_code)
            raise DeliveryFailed(FAILED) from None
        except smtplib.SMTPResponseException as exc:  # sender refused, data refused, greeting refused...
            if exc.smtp_code < 400:
                log.warning("mail server error: %s", type(exc).__name__)
                raise DeliveryFailed(FAILED) from None
            raise rejection(exc.smtp_code, exc.smtp_error, to) from None
        except (smtplib.SMTPException, OSError) as exc:  # disconnects, timeouts, refused connections, TLS
            log.warning("mail delivery failed: %s", type(exc).__name__)
            raise DeliveryFailed(FAILED) from None

    async def close(self) -> None:
        await asyncio.to_thread(self._pool.shutdown, True)
