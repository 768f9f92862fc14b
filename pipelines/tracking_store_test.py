"""The start-up check of the MLflow store: one line for every store that cannot work, naming the
store with its secrets hidden, and nothing created; MLflow's file store works. The store a reading
command finds is the one training logs to, and looking never creates an empty one."""

import http.server
import socket
import sys
import threading

import pytest

from pipelines.tracking_store import TrackingStoreError, check_store, error_line, existing_store_uri, safe_uri

NO_TRACKING = "or train without tracking: --set mlflow.enabled=false"


def _closed_port() -> int:
    # Bound and released: nothing listens there, so a connection is refused at once.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _refusal(uri: str, origin: str | None = "mlflow.tracking_uri") -> str:
    with pytest.raises(TrackingStoreError) as info:
        check_store(uri, "exp", origin=origin)
    message = str(info.value)
    assert "\n" not in message and message.endswith(NO_TRACKING), message
    return message


def test_secrets_are_hidden_and_paths_kept():
    assert safe_uri("postgresql://me:pw@db/mlflow") == "postgresql://me:***@db/mlflow"
    assert safe_uri("https://u:p%40ss@h:5000/x?api_key=1&run=2") == "https://u:***@h:5000/x?api_key=***&run=2"
    assert safe_uri("http://h/?token=abc&access_token=d") == "http://h/?token=***&access_token=***"
    assert safe_uri("sqlite:////abs/mlflow.db") == "sqlite:////abs/mlflow.db"
    assert safe_uri("file:///tmp/mlruns") == "file:///tmp/mlruns"
    assert safe_uri("http://[::1") == "http://***"
    uri = "http://me:s3cret@h:1"
    assert error_line(ValueError(f"request to {uri}/api failed\nmore"), uri) == "request to http://me:***@h:1/api failed"


def test_a_server_that_does_not_answer_is_one_line_that_says_to_start_it():
    port = _closed_port()
    message = _refusal(f"http://me:s3cret@127.0.0.1:{port}")
    assert message.startswith(f"MLflow tracking store http://me:***@127.0.0.1:{port} (from mlflow.tracking_uri): "
                               f"does not answer (connection refused); start the server"), message
    assert "s3cret" not in message


@pytest.mark.parametrize("status, said", [(401, "refused access (HTTP 401); give it credentials"),
                                          (404, "answers with HTTP 404, not with MLflow's API"),
                                          (200, "answers with a page that is not JSON, not with MLflow's API")])
def test_a_web_server_that_is_not_an_mlflow_server_is_named_so(status, said):
    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(status)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html>some other service</html>")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        message = _refusal(f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
    assert said in message, message


def test_an_unknown_scheme_names_it_and_the_schemes_that_work():
    message = _refusal("htp://127.0.0.1:5000", origin="$MLFLOW_TRACKING_URI")
    assert message.startswith("MLflow tracking store htp://127.0.0.1:5000 (from $MLFLOW_TRACKING_URI): "
                              "MLflow has no store for the scheme 'htp'; use http(s)://HOST:PORT"), message


def test_a_missing_database_driver_is_named(monkeypatch):
    # None in sys.modules makes the import fail whether or not the driver is installed.
    for name in ("psycopg", "psycopg2"):
        monkeypatch.setitem(sys.modules, name, None)
    message = _refusal("postgresql://me:s3cret@127.0.0.1:1/mlflow")
    assert "postgresql://me:***@127.0.0.1:1/mlflow" in message and "s3cret" not in message
    assert "needs the Python module 'psycopg" in message, message


def test_sqlite_stores_that_cannot_be_written_are_refused_before_anything_is_created(tmp_path):
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "not_a_db.db").write_text("hello")
    (tmp_path / "a_folder.db").mkdir()
    before = sorted(tmp_path.rglob("*"))
    cases = {f"sqlite:///{tmp_path}/a_file/runs/mlflow.db": f"{tmp_path}/a_file is a file, not a folder",
             f"sqlite:///{tmp_path}/a_folder.db": "is a folder, not a database file",
             f"sqlite:///{tmp_path}/not_a_db.db": "cannot open",
             # Not writable even by root (tests may run as root, where permission bits do not stop writes).
             "sqlite:////proc/setnet-test/mlflow.db": "cannot create /proc/setnet-test/mlflow.db: /proc is not writable"}
    for uri, reason in cases.items():
        message = _refusal(uri, origin="the embedded store of runs_dir")
        assert message.startswith(f"MLflow tracking store {uri} (from the embedded store of runs_dir): "), message
        assert reason in message and "--set runs_dir=DIR" in message, message
    assert sorted(tmp_path.rglob("*")) == before


def test_stores_that_work_pass(tmp_path):
    check_store(f"sqlite:///{tmp_path}/new/folder/mlflow.db", "exp")  # MLflow creates the folders
    assert (tmp_path / "new" / "folder" / "mlflow.db").is_file()
    check_store(f"sqlite:///{tmp_path}/new/folder/mlflow.db", "exp")  # and opens it again
    check_store((tmp_path / "mlruns").as_uri(), "exp")  # MLflow 3's file store, in maintenance mode
    check_store(str(tmp_path / "plain"), "exp")  # a plain folder is the file store too


def test_a_file_store_switched_off_by_the_user_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "false")
    message = _refusal((tmp_path / "mlruns").as_uri())
    assert "MLflow's file store is switched off (MLFLOW_ALLOW_FILE_STORE=false); unset it" in message, message


def test_a_missing_embedded_store_names_its_path_and_is_not_created(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(TrackingStoreError, match=f"no MLflow store at {tmp_path / 'mlflow.db'}: train first"):
        existing_store_uri(None, tmp_path)
    assert not (tmp_path / "mlflow.db").exists()
    (tmp_path / "mlflow.db").touch()
    assert existing_store_uri(None, tmp_path) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"


def test_a_named_or_environment_store_wins_over_the_runs_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert existing_store_uri(None, tmp_path) == "http://127.0.0.1:5000"
    assert existing_store_uri("http://tracking:80", tmp_path) == "http://tracking:80"
    assert existing_store_uri("sqlite:///:memory:", tmp_path) == "sqlite:///:memory:"  # nothing to find
