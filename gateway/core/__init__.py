"""The gateway's pure core: decisions as values, computed from data passed in.

Pure: no I/O, no async, no clock, no logging. The shell (engine, proxy, workers) performs
what these modules decide.
"""
