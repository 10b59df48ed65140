"""sd-gke disk attacher: turns the runtime disk image into a mounted, verified runtime on a GPU node.

Kept import-light on purpose: the Pulumi program imports `attacher.permissions` and `attacher.names`
without pulling in the Compute client.
"""
