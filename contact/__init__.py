"""contact: see service.py."""
