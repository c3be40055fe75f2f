"""MongoDB social-timeline service: one HTTP API, three fan-out strategies."""
