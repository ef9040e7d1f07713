"""Disk Copy: plan a SOURCE -> TARGET copy, run it (resumable, past bad sectors), its result
and report.
"""
