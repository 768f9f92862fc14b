"""The teleport study's bookkeeping (targets, paired time ratios, the table) and its argument checks."""

import pytest

from examples.teleport_study import main, reach, summarise, table


def _run(optimizer, seed, teleport, losses, seconds):
    return {"optimizer": optimizer, "seed": seed, "teleport": teleport, "train_loss": losses,
            "seconds": seconds, "val_accuracy": 0.5, "teleports": [], "teleport_seconds": 0.1 if teleport else 0.0}


def test_target_is_the_worst_plain_final_loss_and_ratios_are_paired_by_seed():
    runs = [
        _run("sgd", 0, False, [2.0, 1.0, 0.5], [0, 1, 2]),
        _run("sgd", 1, False, [2.0, 1.5, 0.8], [0, 1, 2]),
        _run("sgd", 0, True, [2.0, 0.7, 0.3], [0, 1.2, 2.2]),   # reaches 0.8 at epoch 1, 1.2 s
        _run("sgd", 1, True, [2.0, 1.9, 0.9], [0, 1, 2]),       # never reaches 0.8
    ]
    (row,) = summarise(runs, ["sgd"])
    assert row["target_loss"] == 0.8
    assert reach(runs[0], 0.8) == (2, 2) and reach(runs[3], 0.8) == (None, None)
    assert row["plain"]["reached"] == "2/2" and row["teleport"]["reached"] == "1/2"
    # seed 0: 1.2 s / 2 s; seed 1: never -> infinite; the median of the two is infinite too
    assert row["time_ratio_per_seed"] == [pytest.approx(0.6), float("inf")]
    text = table([row])
    assert "| sgd | never" not in text and "| sgd | 0.60, never | inf | no |" in text
    assert "| sgd | 0.8000 | teleport | 1/2 | 1.0 | 1.20 |" in text


@pytest.mark.parametrize("argv, message", [
    (["--set", "teleport.nope=1"], "unknown setting"),
    (["--set", "teleport"], "expected KEY=JSON"),
    (["--set", "nope.x=1"], "unknown setting 'nope.x' (the top level has dataset"),
    (["--optimizers", "rmsprop"], "invalid choice"),
])
def test_bad_settings_are_refused_before_any_work(capsys, tmp_path, argv, message):
    with pytest.raises(SystemExit) as stop:
        main([*argv, "--out", str(tmp_path / "out")])
    assert stop.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
