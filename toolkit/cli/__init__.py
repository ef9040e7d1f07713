"""``rtk``: one module per command (``main`` dispatches), shared helpers in ``common``."""
