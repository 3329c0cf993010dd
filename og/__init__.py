"""og: see service.py."""
