"""The sd-gke queue agent: a sidecar of the WebUI pod that turns Pub/Sub jobs into results in a bucket."""
