"""The contact service: one send, checked in the spec's order, built once per worker.

    profile visible (404) → rate limit (429) → body (400) → Turnstile (400)
    → owner's daily token (429) → owner set-up (400) → credits (402) → delivery (502)

The limiter runs before the body is even parsed, so abuse is rejected at the
cost of one Redis round trip; every attempt spends the visitor's per-address
tokens, but only a valid form that passed Turnstile spends the owner's daily
token (contact/limiter.py). Credits are held before delivery and settled or
given back once it is known whether it went out (contact/credits.py).

Built by runtime/services.py with the few things it needs (the site directory,
the clock, the limiter, Turnstile, the credits and the three senders).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from common.metrics import DELIVERIES
from contact import owner_setup
from contact.credits import Credits, CreditsUnavailable, Hold
from contact.delivery.discord import FAILED as DISCORD_FAILED
from contact.delivery.discord import DiscordSender, embed_payload
from contact.delivery.email import FAILED as EMAIL_FAILED
from contact.delivery.email import EmailSender
from contact.delivery.sms import FAILED as SMS_FAILED
from contact.delivery.sms import SmsSender
from contact.errors import (
    AntiSpamFailed,
    DeliveryFailed,
    NotActive,
    OutOfCredits,
    ProfileNotFound,
    Throttled,
    Unavailable,
)
from contact.limiter import ContactLimiter, Decision, LimiterUnavailable
from contact.owner_setup import EmailRecipient, Recipient, SmsRecipient
from contact.turnstile import Turnstile
from contact.validation import ContactForm, parse_form
from store.clock import Clock
from store.errors import describe_error
from store.formats import ID_PATTERN
from store.models import CREDIT_FIELDS, Site
from store.outages import is_store_outage
from store.sites import SiteDirectory

log = logging.getLogger("hepgg.contact")

CHANNELS = ("sms", "email", "discord")
FAILED = {"sms": SMS_FAILED, "email": EMAIL_FAILED, "discord": DISCORD_FAILED}


@dataclass
class ContactService:
    sites: SiteDirectory
    clock: Clock
    limiter: ContactLimiter
    turnstile: Turnstile
    credits: Credits
    sms: SmsSender
    email: EmailSender
    discord: DiscordSender

    async def send(self, channel: str, profile_id: str, client_ip: str, body: bytes) -> dict[str, Any]:
        """The `data` of a successful answer; a ContactError subclass otherwise."""
        site = await self._visible_site(profile_id)
        await self._limit(self.limiter.admit(site.owner.id, site.profile.id, client_ip, channel))
        form = parse_form(channel, body)
        if not await self.turnstile.verify(form.token, client_ip):
            raise AntiSpamFailed()
        await self._limit(self.limiter.take_owner_token(site.owner.id, channel))
        recipient = owner_setup.recipient(site, channel)
        if recipient is None:
            raise NotActive(channel)
        hold = await self._hold_credit(site.owner.id, channel) if channel in CREDIT_FIELDS else None
        try:
            data = await self._deliver(site, recipient, form)
        except Exception as exc:  # DeliveryFailed, or a bug: either way the owner gets the credit back
            DELIVERIES.labels(channel, "failed").inc()
            if hold is not None:
                await self.credits.refund(hold)
            if isinstance(exc, DeliveryFailed):
                raise
            log.exception("contact delivery crashed")
            raise DeliveryFailed(FAILED[channel]) from None
        DELIVERIES.labels(channel, "ok").inc()
        if hold is not None:
            await self.credits.settle(hold)
        return data

    async def _hold_credit(self, owner_id: str, channel: str) -> Hold:
        try:
            hold = await self.credits.hold(owner_id, channel)
        except CreditsUnavailable:
            log.error("credits store unavailable; refusing contact sends")
            raise Unavailable() from None
        if hold is None:
            raise OutOfCredits(channel)
        return hold

    async def _limit(self, decision: Awaitable[Decision]) -> None:
        try:
            verdict = await decision
        except LimiterUnavailable as exc:  # its text is the Redis error's (MOVED, CLUSTERDOWN, which host...)
            log.error("rate limiter unavailable (%s); refusing contact sends", exc)
            raise Unavailable() from None
        if not verdict.allowed:
            raise Throttled(verdict.retry_after)

    async def _visible_site(self, profile_id: str) -> Site:
        if not ID_PATTERN.match(profile_id):
            raise ProfileNotFound()
        try:
            site = await self.sites.by_id(profile_id)
        except Exception as exc:
            if not is_store_outage(exc):  # a bug is not an outage
                raise
            log.error("profile lookup failed: %s", describe_error(exc))  # the profile store is down: fail closed
            raise Unavailable() from None
        if site is None or not site.is_visible(self.clock.now()):
            raise ProfileNotFound()
        return site

    async def _deliver(self, site: Site, recipient: Recipient, form: ContactForm) -> dict[str, Any]:
        if isinstance(recipient, SmsRecipient):
            await self.sms.send(recipient.key, recipient.phone, form.message)
            return {"queued": True}
        if isinstance(recipient, EmailRecipient):
            assert form.email is not None  # parse_form requires it on the email form
            message_id = await self.email.send(
                recipient.address, form.email, form.subject, form.message, site.profile.domain
            )
            return {"queued": True, "messageId": message_id}
        payload = embed_payload(form.handle, form.message, site.profile.domain, site.profile.theme.accent)
        await self.discord.send(recipient.channel_id, payload)
        return {"queued": True}
