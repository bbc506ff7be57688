"""Helpers shared by the integration tests: brick daemons (bricks.py) and mounts."""
