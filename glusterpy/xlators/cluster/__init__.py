"""cluster translators."""
