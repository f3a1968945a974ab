"""Ingest: reading batches from the broker into the time-series store (SQLite or InfluxDB)."""
