"""volfs."""
