"""A discrete-event model of sd-gke's request path and scaling, old design against new, for choosing its
defaults offline.

`scenario` says what a run models, `model` simulates it, `result` is what it gives; `arrivals` generates
demand and the scenarios; `trace` reads an operator's trace; `warm` parses warm schedules; `stats`
summarises latencies (shared with tools/loadtest.py); `plot` draws the timeline. The command line is
tools/simulate.py.
"""
