"""`python -m pipelines.sweep`: bad input is one line and exit code 2, before anything is written."""

import pathlib

from pipelines.sweep.__main__ import main

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _write(tmp_path, text: str) -> pathlib.Path:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return path


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    path = _write(tmp_path, "space: {model.blocks.0.unit: [8, 16]}")
    assert main(["--config", str(ROOT / "configs" / "digits.yaml"), "--sweep", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "did you mean 'model.blocks.0.units'" in err
    assert main(["--config", str(ROOT / "configs" / "digits.yaml"), "--sweep", str(tmp_path / "none.yaml")]) == 2
    assert "not found (shipped sweeps in sweeps/: default.yaml" in capsys.readouterr().err
    assert main(["--sweep", str(ROOT / "sweeps" / "default.yaml"), "--set", "train.epoch=2"]) == 2
    assert "train.epoch" in capsys.readouterr().err
    assert main(["--sweep", str(ROOT / "sweeps" / "default.yaml"), "--parallel", "0"]) == 2
    assert "--parallel must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_an_objective_that_does_not_fit_the_data_is_one_line_and_exit_2(tmp_path, capsys):
    from tests.support.sweep import write_regression_table

    table = write_regression_table(tmp_path / "shapes.parquet")
    path = _write(tmp_path, "objective: val_accuracy\nspace: {train.loss: [mse, huber]}")
    assert main(["--config", str(ROOT / "configs" / "own_regression.yaml"), "--sweep", str(path),
                 "--set", f"data.path={table}", f"runs_dir={tmp_path / 'runs'}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {path}: objective 'val_accuracy' is a classification")
    assert not (tmp_path / "runs").exists()
