"""Tests of auditor.packets; the hand-written capture files and packets they read are built by
helpers.py."""
