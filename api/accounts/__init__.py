"""Accounts: users and passwords, API keys, credits (ledger, reservations, settlement), usage."""
