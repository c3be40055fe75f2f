"""Abuse resistance: rate limits counted in MongoDB, and the named rules."""
