"""Notifier: tells customers what happened to their order, on every channel that can reach them."""
