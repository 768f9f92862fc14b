"""The study's storage: a storage URL is shown without its password."""

from pipelines.sweep.study import safe_url


def test_storage_url_password_is_not_logged():
    assert safe_url("postgresql://me:secret@db/optuna") == "postgresql://me:***@db/optuna"
    assert safe_url("sqlite:////tmp/optuna.db") == "sqlite:////tmp/optuna.db"
