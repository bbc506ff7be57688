"""glusterpy: a GlusterFS-style distributed file system in Python.

Brick daemons (glusterpyd) serve directories over TCP; the FUSE client (glusterpy mount) mounts
a volume. Both run translator graphs described by GlusterFS-style volfiles.
"""

__version__ = "0.1.0"
