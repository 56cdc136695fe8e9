"""Tickets: the Mask value and the pruning methods."""
