"""The side-by-side benchmark of issue 7: glusterpy and GlusterFS 10.3, replica 2, one disk.

`bench/run` (or `python -m bench`) sets both volumes up, runs the workloads of
`bench.workloads` on them and on the local disk alternately, writes a table, a JSON file and a
chart (`bench.report`), and tears everything down, also on failure or Ctrl-C.
"""
