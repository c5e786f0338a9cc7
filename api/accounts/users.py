"""Users: sign-up and login by email and password."""

from __future__ import annotations

import re
from typing import Optional

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from api.accounts.credits import append_entry
from api.accounts.passwords import MIN_PASSWORD_LENGTH, hash_password, verify_password
from api.store.db import Database
from api.store.models import User

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")


class AccountError(ValueError):
    """A sign-up or account change that cannot be done; the message is safe to show the user."""


def normalize_email(email: str) -> str:
    return email.strip().lower()


def create_user(db: Database, email: str, password: str, starting_credit_micros: int = 0,
                credit_note: str = "Sign-up credit") -> User:
    """A new user, with `starting_credit_micros` granted in the same transaction (never one
    without the other)."""
    email = normalize_email(email)
    if not _EMAIL.match(email) or len(email) > 320:
        raise AccountError("Please enter a valid email address.")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"Passwords need at least {MIN_PASSWORD_LENGTH} characters.")
    try:
        with db.transaction() as session:
            user = User(email=email, password_hash=hash_password(password), balance_micros=0, reserved_micros=0)
            session.add(user)
            session.flush()
            if starting_credit_micros > 0:
                append_entry(session, user.id, starting_credit_micros, "grant", note=credit_note)
            return user
    except IntegrityError:
        raise AccountError("An account with this email already exists.") from None


def authenticate(db: Database, email: str, password: str) -> Optional[User]:
    """The user with these credentials, or None (in the same time whether or not the email exists)."""
    user = find_user(db, email)
    if not verify_password(user.password_hash if user else None, password):
        return None
    return user


def find_user(db: Database, email: str) -> Optional[User]:
    with db.transaction() as session:
        return session.scalar(select(User).where(User.email == normalize_email(email)))


def get_user(db: Database, user_id: int) -> Optional[User]:
    with db.transaction() as session:
        return session.get(User, user_id)


def count_users(db: Database) -> int:
    with db.transaction() as session:
        return session.scalar(select(func.count()).select_from(User)) or 0
