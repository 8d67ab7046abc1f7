"""Ingestion: turns every channel's raw orders into one canonical OrderSubmitted, in UTC, once."""
