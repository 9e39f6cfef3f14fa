"""Storage URLs as they may be recorded: no password or credential-like query value survives."""
from __future__ import annotations

from nas.redact import HIDDEN, redact, scrub


def test_passwords_and_credential_query_values_are_hidden() -> None:
    url = "postgresql+psycopg2://user:SECRETPASS@127.0.0.1:5432/db?sslpassword=S2&application_name=hwnas"
    shown = redact(url)
    assert "SECRETPASS" not in shown and "S2" not in shown
    assert shown == f"postgresql+psycopg2://user:{HIDDEN}@127.0.0.1:5432/db?sslpassword={HIDDEN}&application_name=hwnas"
    assert "abc" not in redact("sqlite:////tmp/study.db?password=abc")
    assert "XYZ" not in redact("mysql://db.example/x?auth_token=XYZ&charset=utf8")


def test_urls_without_secrets_are_unchanged() -> None:
    for url in ("sqlite:////tmp/runs/search/study.db", "postgresql://user@host/db", "postgresql://host:5432/db?x=1"):
        assert redact(url) == url


def test_scrub_removes_the_url_and_its_secrets_from_driver_messages() -> None:
    url = "postgresql://u:PW123@localhost:1/db?token=T0K"
    message = f"could not connect to {url}: password PW123 rejected (token T0K)"
    clean = scrub(message, url)
    assert "PW123" not in clean and "T0K" not in clean and "localhost:1/db" in clean
