"""presence: see service.py."""
