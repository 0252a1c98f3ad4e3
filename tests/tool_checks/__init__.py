"""Checks of compiled native jobs by the tools themselves. Each module here is a standalone
script run with the tool's own environment's Python (it never imports honly)."""
