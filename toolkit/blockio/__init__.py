"""Block I/O shared by copy, restore and verification: devices, SG_IO, allocation maps,
mapfiles, the reader/hasher/consumer pipeline, hashing and comparing.
"""
