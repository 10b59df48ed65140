"""A discrete-event model of sd-gke's request-driven scaling, for choosing its defaults offline.

`model` simulates one scenario; `arrivals` generates demand; `stats` summarises latencies (shared
with tools/loadtest.py); `plot` draws the timeline. The command line is tools/simulate.py.
"""
