"""Screens. A view builds widgets from plain data and calls its controller; no I/O."""
