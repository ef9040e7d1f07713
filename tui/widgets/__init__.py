"""Widgets that several screens share: the base view and dialog, the disk chooser, the disk
summary column, forms, the typed confirmation.
"""
