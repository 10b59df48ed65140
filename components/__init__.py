"""sd-gke components: one ComponentResource per module, plus config, labels and the runtime layout."""
