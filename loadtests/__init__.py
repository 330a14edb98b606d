"""Locust load tests (`locust -f loadtests/`)."""
