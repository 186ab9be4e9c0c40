"""The actor machinery behind ``runtime``: internal, with no public promises."""
