"""Disks: the probe (sysfs, udev, mounts), the inventory, roles, and the checks of a write
target.
"""
