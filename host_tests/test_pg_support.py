"""host_tests/pg_support.py: without PostgreSQL, its tests skip with the reason, except under
CI=true, where they fail (CI must run them)."""
import pytest

import pg_support


@pytest.mark.parametrize("ci, outcome", [("", pytest.skip.Exception),
                                         ("false", pytest.skip.Exception),
                                         ("true", pytest.fail.Exception),
                                         ("1", pytest.fail.Exception)])
def test_unavailable_postgresql_skips_or_fails_in_ci(monkeypatch, ci, outcome):
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="PostgreSQL unavailable: no initdb"):
        pg_support._unavailable("no initdb")


def test_a_machine_without_postgresql_is_told_what_to_install(monkeypatch):
    from fieldlink_tools import temp_postgres
    monkeypatch.setattr(temp_postgres, "find_bindir", lambda: None)
    with pytest.raises(temp_postgres.PostgresUnavailable, match="Debian package postgresql"):
        temp_postgres.TempPostgres()


def test_temp_postgres_runs_unprivileged_with_fsync_and_leaves_nothing(pg_server):
    # pg_server: this skips (or fails under CI) as every PostgreSQL test does without it
    import os
    import pwd
    from fieldlink_tools.temp_postgres import TempPostgres
    with TempPostgres() as pg:
        proc, base = pg.proc, pg.base
        owner = pwd.getpwuid(os.stat(os.path.join(pg.data, "PG_VERSION")).st_uid).pw_name
        assert owner == ("nobody" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name)
        assert os.stat(base).st_mode & 0o077 == 0                # only its owner gets in
        with pg.connect() as c:
            assert c.execute("SHOW fsync").fetchone() == ("on",)
            assert c.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
        assert pg.port != pg_server.port                         # a server of its own
    assert proc.poll() is not None and not os.path.exists(base)
