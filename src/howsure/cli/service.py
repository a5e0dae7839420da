"""Service commands: serve, users, tokens (filled in by the service work)."""
