"""Whether an owner has set a channel up, from the owner's typed contact settings (store/models.py).

Set-up is what the owner configured in the dashboard (key, verified phone or
address, Discord channel and bot) plus the profile's own toggle for the form.
The credit balance is not part of it: an owner with everything set up and a
zero balance gets 402 (out of credits), which the spec lists separately.
"""

from __future__ import annotations

from dataclasses import dataclass

from store.models import Site


@dataclass(frozen=True)
class SmsRecipient:
    """Where a channel delivers; never shown to the visitor."""

    phone: str
    key: str  # the owner's own SMS API key


@dataclass(frozen=True)
class EmailRecipient:
    address: str


@dataclass(frozen=True)
class DiscordRecipient:
    channel_id: str


Recipient = SmsRecipient | EmailRecipient | DiscordRecipient


def recipient(site: Site, channel: str) -> Recipient | None:
    """The channel's destination, or None when the form is not active."""
    if not site.profile.toggle(f"contact_{channel}"):
        return None
    owner = site.owner
    if channel == "sms":
        sms = owner.sms
        if sms.enabled and sms.key and sms.phone and sms.phone_verified:
            return SmsRecipient(phone=sms.phone, key=sms.key)
        return None
    if channel == "email":
        email = owner.email
        if email.enabled and email.key and email.address and email.verified:
            return EmailRecipient(address=email.address)
        return None
    if channel == "discord":
        discord = owner.discord
        if discord.channel_id and discord.channel_id.isdigit() and discord.bot_present:
            return DiscordRecipient(channel_id=discord.channel_id)
        return None
    raise ValueError(channel)
