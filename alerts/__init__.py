"""Alerts: rules over readings and events -> alarms, hazard-ledger entries and notices."""
