"""music: see service.py."""
