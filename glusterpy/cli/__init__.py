"""Command-line programs: glusterpyd (brick daemon) and glusterpy (mount and admin)."""
