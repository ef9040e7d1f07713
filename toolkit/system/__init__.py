"""The live system this runs on: paths, host name and power, logs, and the external tools it
drives.
"""
