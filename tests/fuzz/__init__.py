"""Fuzz tests of every parser of untrusted input (docs/fuzzing.md); their shared strategies and
runner are in helpers.py."""
