"""Code shared by the test folders: the CLI runner, store backends, constants, PKI, webhook, servers, waiting.

Test folders import from here, never from each other; conftest.py files keep only fixtures.
"""
