"""Controlled studies reproducing the seed papers' claims on the synthetic tasks.

See docs/studies.md for the commands, the tables and the verdicts.
"""
