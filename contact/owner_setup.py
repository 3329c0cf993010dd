"""Whether an owner has set a channel up, from the stored user document (`Owner.raw`).

Set-up is what the owner configured in the dashboard (key, verified phone or
address, Discord channel and bot) plus the profile's own toggle for the form.
The credit balance is not part of it: an owner with everything set up and a
zero balance gets 402 (out of credits), which the spec lists separately.
"""

from __future__ import annotations

from dataclasses import dataclass

from store.records import Site


@dataclass(frozen=True)
class Recipient:
    """Where a channel delivers; never shown to the visitor."""

    phone: str | None = None
    sms_key: str | None = None
    address: str | None = None
    channel_id: str | None = None


def _text(value: object) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def recipient(site: Site, channel: str) -> Recipient | None:
    """The channel's destination, or None when the form is not active."""
    if not site.profile.toggle(f"contact_{channel}"):
        return None
    raw = site.owner.raw
    if channel == "sms":
        sms = raw.get("sms") or {}
        key, phone = _text(sms.get("key")), _text(sms.get("phone"))
        if sms.get("enabled") is True and key and phone and sms.get("phone_verified") is True:
            return Recipient(phone=phone, sms_key=key)
        return None
    if channel == "email":
        email = raw.get("email") or {}
        address = _text(email.get("address"))
        if email.get("enabled") is True and _text(email.get("key")) and address and email.get("verified") is True:
            return Recipient(address=address)
        return None
    if channel == "discord":
        discord = raw.get("discord") or {}
        channel_id = _text(discord.get("channel_id"))
        if channel_id and channel_id.isdigit() and discord.get("bot_present") is True:
            return Recipient(channel_id=channel_id)
        return None
    raise ValueError(channel)
