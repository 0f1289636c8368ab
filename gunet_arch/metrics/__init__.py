"""Filled in by its own module files; importing registers them with BasicSR."""
