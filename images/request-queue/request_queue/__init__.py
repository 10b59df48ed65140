"""The request queue: one FIFO buffer in front of the WebUI pods, which pull from it (docs/request-queue.md)."""
