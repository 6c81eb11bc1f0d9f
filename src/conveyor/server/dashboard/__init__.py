"""The web dashboard: server-rendered pages over the application layer (docs/dashboard.md)."""
