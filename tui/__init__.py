"""The keyboard-driven urwid menu of the Recovery Toolkit."""
