"""The example service (see examples/app.py and docs/fastapi.md)."""
