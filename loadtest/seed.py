"""Write an import file of load-test profiles for `hepgg_server.py import`.

    python loadtest/seed.py --count 50 --base-domain hep.gg --music-key KEY > loadtest.json
    python hepgg_server.py import loadtest.json

Profiles `<prefix>0 … <prefix>(N-1)` on the base domain, one premium owner each
(`<prefix>owner-<i>`) with presence on, one track, and all three contact forms
set up with generous credits. The locustfile's `--slug-prefix/--slug-count`
name the same hosts. The music key is the one the target's music worker
accepts: the proxy attaches it server-side, a visitor never sends it.
Plain data, no database: the server's own import validates and writes it.
"""

from __future__ import annotations

import argparse
import json
import sys


def loadtest_document(count: int, base_domain: str, prefix: str, music_key: str, isrc: str, credits: int) -> dict:
    users, profiles = [], []
    for i in range(count):
        owner = f"{prefix}owner-{i}"
        users.append(
            {
                "id": owner,
                "premium_until": "2099-01-01T00:00:00Z",
                "suspended": False,
                "sms": {"enabled": True, "key": f"{prefix}sms-key", "phone": "+15550100", "phone_verified": True},
                "sms_credits": credits,
                "email": {
                    "enabled": True,
                    "key": f"{prefix}email-key",
                    "address": "loadtest@example.com",
                    "verified": True,
                },
                "email_credits": credits,
                "discord": {"channel_id": "1234567890", "bot_present": True},
                "music": {"enabled": True, "key": music_key},
            }
        )
        profiles.append(
            {
                "id": f"{prefix}{i}",
                "owner_id": owner,
                "domain": f"{prefix}{i}.{base_domain}",
                "template": ("classic", "minimal", "spotlight")[i % 3],
                "is_public": 1,
                "suspended": 0,
                "expires_at": None,
                "created_at": "2026-01-01T00:00:00Z",
                "theme": {"accent": "#7c3aed", "background": "#0b0b10", "font": "Inter"},
                "content": {
                    "display_name": f"Load test {i}",
                    "bio": "A profile for load testing.",
                    "avatar_url": None,
                    "links": [{"label": "Website", "url": "https://hep.gg/"}],
                    "music": [{"isrc": isrc, "title": "Load test track", "artist": "Locust"}],
                },
                "toggles": {
                    "presence": True,
                    "powered_by": False,
                    "contact_sms": True,
                    "contact_email": True,
                    "contact_discord": True,
                },
            }
        )
    return {"users": users, "profiles": profiles}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=50, help="number of profiles")
    parser.add_argument("--base-domain", default="hep.gg")
    parser.add_argument("--prefix", default="lt-", help="slug prefix (the locustfile's --slug-prefix)")
    parser.add_argument("--music-key", default="loadtest-music-key", help="owner music key the worker accepts")
    parser.add_argument("--isrc", default="USRC17607839", help="the track every profile embeds")
    parser.add_argument("--credits", type=int, default=1_000_000, help="SMS and email credits per owner")
    args = parser.parse_args(argv)
    document = loadtest_document(
        args.count, args.base_domain.strip(".").lower(), args.prefix, args.music_key, args.isrc.upper(), args.credits
    )
    json.dump(document, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
