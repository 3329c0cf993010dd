"""Locust load test for operators: `locust -f loadtest/locustfile.py` (see docs/loadtest.md)."""
