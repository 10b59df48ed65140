"""A discrete-event model of sd-gke's request path and scaling, old design against new, for choosing its
defaults offline.

`model` simulates one scenario; `arrivals` generates demand and the scenarios; `trace` reads an operator's
trace; `warm` parses warm schedules; `stats` summarises latencies (shared with tools/loadtest.py); `plot`
draws the timeline. The command line is tools/simulate.py.
"""
