"""Cairn's pure domain: the segment filter language, rules, audience diffs and journeys.

Nothing here does I/O or touches globals, and nothing imports Flask, SQLAlchemy, Dramatiq or
any other part of Cairn: callers load the facts, call these functions and persist the results.
"""
