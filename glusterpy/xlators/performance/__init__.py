"""performance translators."""
