"""Operator commands: `llamagate users|keys|credits|usage ...` (a console for the account store)."""

from __future__ import annotations

import argparse
import getpass
import sys

from api.accounts import api_keys, credits, usage, users
from api.accounts.money import dollars_to_micros, format_micros
from api.accounts.payments import OperatorGrants
from api.store.db import Database


def add_commands(commands: argparse._SubParsersAction) -> None:
    user = commands.add_parser("users", help="manage users").add_subparsers(dest="action", required=True)
    create = user.add_parser("create", help="create a user (asks for the password unless --password)")
    create.add_argument("email")
    create.add_argument("--password")

    key = commands.add_parser("keys", help="manage API keys").add_subparsers(dest="action", required=True)
    create_key = key.add_parser("create", help="create an API key for a user and print it (once)")
    create_key.add_argument("email")
    create_key.add_argument("--name", default="CLI key")
    create_key.add_argument("--rpm", type=int, help="this key's requests per window (default: the deployment's)")
    create_key.add_argument("--tpm", type=int, help="this key's tokens per window")
    create_key.add_argument("--concurrency", type=int, help="this key's concurrent requests")

    credit = commands.add_parser("credits", help="grant credits, show balances").add_subparsers(
        dest="action", required=True)
    grant = credit.add_parser("grant", help="add credits to a user's balance, e.g. `grant a@b.c 5.00`")
    grant.add_argument("email")
    grant.add_argument("amount", help="US dollars, e.g. 5 or 12.50")
    grant.add_argument("--note", default="granted by an operator")
    show = credit.add_parser("show", help="balance and latest ledger entries")
    show.add_argument("email")

    usage_ = commands.add_parser("usage", help="a user's recent requests")
    usage_.add_argument("email")
    usage_.add_argument("--limit", type=int, default=20)


def run_command(args: argparse.Namespace, db: Database) -> int:
    """Run an account command; returns the exit status."""
    if args.command == "users":
        password = args.password or getpass.getpass("password: ")
        user = users.create_user(db, args.email, password)
        print(f"created user {user.email} (id {user.id})")
        return 0
    user = users.find_user(db, args.email)
    if user is None:
        print(f"no user with email {args.email}", file=sys.stderr)
        return 1
    if args.command == "keys":
        created = api_keys.create_key(db, None, user.id, args.name, rate_limit_requests=args.rpm,
                                      rate_limit_tokens=args.tpm, rate_limit_concurrency=args.concurrency)
        print(created.secret)
    elif args.command == "credits" and args.action == "grant":
        balance = OperatorGrants(db).grant(user.id, dollars_to_micros(args.amount), args.note)
        print(f"granted {format_micros(dollars_to_micros(args.amount))}; balance {format_micros(balance)}")
    elif args.command == "credits":
        balance = credits.get_balance(db, user.id)
        print(f"balance {format_micros(balance.balance_micros)} "
              f"(reserved by running requests: {format_micros(balance.reserved_micros)})")
        for entry in credits.ledger_entries(db, user.id, limit=20):
            print(f"{entry.created_at:%Y-%m-%d %H:%M:%S}  {format_micros(entry.amount_micros):>14}  "
                  f"{entry.kind:<8} {entry.note}")
    elif args.command == "usage":
        for record in usage.recent_requests(db, user.id, limit=args.limit):
            print(f"{record.created_at:%Y-%m-%d %H:%M:%S}  {record.model:<28} {record.status:<20} "
                  f"{record.prompt_tokens:>6}+{record.completion_tokens:<6} {format_micros(record.cost_micros)}")
    return 0
