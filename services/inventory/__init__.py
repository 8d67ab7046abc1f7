"""Inventory: the one stock pool every channel shares; reserves, releases and adjusts per SKU."""
