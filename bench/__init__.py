"""hitok."""
