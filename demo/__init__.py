"""`serve --demo`: the demo profile's third parties as local stand-ins (music, Turnstile, deliveries)."""
