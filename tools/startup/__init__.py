"""The cold-start timeline: what the cluster recorded about each cold start, phase by phase.

`recording` reads the records (a recorded directory, or a live cluster through kubectl and gcloud);
`timeline` turns them into milestones and phases; `report` prints the tables; `gantt` draws the PNG.
The command line is tools/coldstart.py.
"""
