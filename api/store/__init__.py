"""The relational store: users, API keys, the credit ledger, reservations and the usage log."""
