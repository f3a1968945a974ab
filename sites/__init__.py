"""Site files (institutions, gateways, devices) and their map outlines; data, not code."""
