"""The profile's PostgreSQL store settings: the URL, the schema and the password by
reference (DESIGN §9). Parsing only: no server needed, and psycopg is never imported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mapispool.profile import Profile, ProfileError

URL = "postgresql://mapispool@db.example.test:5432/mail"


def load(text: str) -> Profile:
    return Profile.from_toml(text, source="p.toml")


def test_a_postgresql_url_selects_the_postgres_store() -> None:
    """store = "postgresql://..." (or postgres://) is a PostgreSQL store with its schema."""
    profile = load(f'store = "{URL}"\nstore_schema = "team_a"\n')
    assert profile.store_is_postgres
    assert profile.store == URL
    assert profile.store_schema == "team_a"
    assert load('store = "postgres://u@h/db"\n').store_is_postgres
    assert not load('store = "sqlite:///home/me/store.db"\n').store_is_postgres


def test_the_password_comes_by_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """store_password_env / _file / _command are read when asked; none means libpq's own
    PGPASSWORD or ~/.pgpass apply."""
    monkeypatch.setenv("PGSTORE_PW", "s3cret")
    assert load(f'store = "{URL}"\nstore_password_env = "PGSTORE_PW"\n').store_password() == (
        "s3cret"
    )
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    profile = load(f'store = "{URL}"\nstore_password_file = "{secret}"\n')
    assert profile.store_password() == "from-file"
    assert load(f'store = "{URL}"\nstore_password_command = "echo cmd"\n').store_password() == (
        "cmd"
    )
    assert load(f'store = "{URL}"\n').store_password() is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'store = "postgresql://u:hunter2@h/db"\n',
            "p.toml: store: holds a password; remove it from the URL",
        ),
        (
            'store = "postgresql://u@h/db?password=x"\n',
            "p.toml: store: holds a password in its query",
        ),
        ('store = "postgresql://u@h:99999/db"\n', "p.toml: store: not a valid URL"),
        ('store_schema = "x"\n', "p.toml: store_schema: only a PostgreSQL store takes it"),
        (
            f'store = "{URL}"\nstore_schema = "Bad-Name"\n',
            "p.toml: store_schema: 'Bad-Name' is not a plain schema name",
        ),
        (
            f'store = "{URL}"\nstore_password_env = "A"\nstore_password_file = "f"\n',
            "p.toml: store_password_file: set only one password source",
        ),
    ],
)
def test_bad_store_settings_name_the_key_and_the_fix(text: str, expected: str) -> None:
    """Each mistake fails at load with the file, the key and what to do."""
    with pytest.raises(ProfileError) as caught:
        load(text)
    assert caught.value.message.startswith(expected)
    assert "hunter2" not in str(caught.value)


def test_a_missing_password_variable_names_the_setting_not_a_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An unset variable is a one-line MapiError naming store_password_env."""
    monkeypatch.delenv("NOPE_PW", raising=False)
    profile = load(f'store = "{URL}"\nstore_password_env = "NOPE_PW"\n')
    with pytest.raises(Exception, match="store_password_env: the environment variable 'NOPE_PW'"):
        profile.store_password()


def test_loading_a_postgres_profile_does_not_import_psycopg() -> None:
    """Profile parsing stays light: the sendmail path imports psycopg only to open a
    PostgreSQL store, never to read a profile."""
    code = (
        "import sys\nfrom mapispool.profile import Profile\n"
        f"Profile.from_toml('store = \"{URL}\"')\n"
        "import mapispool.cli.sendmail\n"
        "assert 'psycopg' not in sys.modules, 'psycopg imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_init_writes_a_postgres_profile(tmp_path: Path) -> None:
    """mapispool init --store postgresql://... writes a profile that loads as one."""
    target = tmp_path / "p.toml"
    done = subprocess.run(
        [sys.executable, "-m", "mapispool.cli", "--profile", str(target), "init",
         "--template", "maildir", "--maildir", str(tmp_path / "Mail"),
         "--store", URL, "--store-schema", "team_a", "--store-password-env", "PGSTORE_PW"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    profile = Profile.load(target)
    assert profile.store == URL
    assert profile.store_schema == "team_a"
    assert profile.store_password_env == "PGSTORE_PW"


def test_the_profile_gives_the_store_its_schema_and_password_source(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """postgres_store_options() is what PostgresStore.open takes: the schema, and the
    password read when the store connects (not when the profile loads)."""
    profile = load(f'store = "{URL}"\nstore_schema = "s1"\nstore_password_env = "LATE_PW"\n')
    options = profile.postgres_store_options()
    assert options["schema"] == "s1"
    monkeypatch.setenv("LATE_PW", "set-after-loading")
    assert options["password"]() == "set-after-loading"
