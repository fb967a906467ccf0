"""Fuzz bench: generated and mutated LAN packets and requests through codecs and handlers."""
