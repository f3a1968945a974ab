"""The web app: JSON API and the bureau's live map."""
