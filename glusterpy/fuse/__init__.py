"""The FUSE side of a mount: the bridge onto the translator graph and its bindings."""
