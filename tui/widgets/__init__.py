"""Widgets that several screens share: the base view and dialog, the disk chooser, the
volume chooser and the rows they share (``choices``), the disk summary column, forms, the
typed confirmation.
"""
