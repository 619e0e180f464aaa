"""Protocol conformance checks run by mypy only."""
