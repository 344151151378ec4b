"""What `--db` names, and opening the store it names: a path is a SQLite file; a
postgresql:// (or postgres://) URL is a PostgreSQL database (store_pg.py).

A password never goes in the URL: it would be on the command line (readable by every local
user) and in whatever logs the URL. It comes from libpq's own PGPASSFILE (~/.pgpass) or
PGPASSWORD, or from `--db-password-file`; a URL carrying one is refused.
"""
import re

from .store import DEFAULT_KEEP_HEALTH, SQLiteStore, open_readonly

SCHEMES = ("postgresql://", "postgres://")
# libpq connection parameters that hold a secret
SECRET_KEYS = ("password", "sslpassword")


def is_postgres(db):
    return str(db).startswith(SCHEMES)


def redact(db):
    """`db` fit for a message or a log: every secret libpq could read from it replaced."""
    db = str(db)
    if not is_postgres(db):
        return db
    # user:password@ in the authority, and ?password= / &sslpassword= in the query
    db = re.sub(r"^([a-z]+://[^/?#@]*?:)[^/?#@]*@", r"\1***@", db)
    return re.sub(r"((?:^|[?&])(?:%s)=)[^&#]*" % "|".join(SECRET_KEYS), r"\1***", db)


def check_postgres_url(db):
    """Raise ValueError (with a redacted message) unless `db` is a PostgreSQL URL libpq can
    parse and that carries no secret."""
    from psycopg import Error
    from psycopg.conninfo import conninfo_to_dict
    try:
        params = conninfo_to_dict(db)
    except Error:
        # libpq's message quotes the offending part, which may be the password
        raise ValueError("%s: not a valid PostgreSQL URL" % redact(db)) from None
    secrets = [k for k in SECRET_KEYS if params.get(k)]
    if secrets:
        raise ValueError(
            "%s: a %s in the URL would be readable on the command line and in logs; put it "
            "in a file given with --db-password-file, in PGPASSFILE (~/.pgpass) or in "
            "PGPASSWORD instead" % (redact(db), " and ".join(secrets)))


def open_store(db, readonly=False, synchronous="FULL", keep_health=DEFAULT_KEEP_HEALTH,
               password=None):
    """The store `db` names (StoreError when it cannot be opened; ValueError for a URL that
    is refused). `readonly`: a reader beside a running collector (tests, tools)."""
    if is_postgres(db):
        check_postgres_url(str(db))
        from .store_pg import PostgresStore
        return PostgresStore(str(db), synchronous=synchronous, keep_health=keep_health,
                             password=password, readonly=readonly)
    if readonly:
        return open_readonly(db)
    return SQLiteStore(db, synchronous=synchronous, keep_health=keep_health)
