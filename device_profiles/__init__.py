"""Device models as data: one YAML file per model, read by the gateway, simulators and alerts.

This package holds no code; it exists so that the profiles ship inside an installed wheel.
"""
