"""Volfiles as data: parse, check and render GlusterFS-style volume files."""
