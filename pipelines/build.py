"""What a config trains: the model for a dataset, its optimizer, its objective and dtype policy.

Example:

    from pipelines.build import build_model, make_objective, make_optimizer
    from pipelines.config import load_config

    cfg = load_config(None, [])
    info = {"task": "classification", "num_classes": 10, "num_features": 3, "spatial_axes": (0, 1, 2)}
    model = build_model(cfg, info)
    optimizer = make_optimizer(cfg.train, steps_per_epoch=100)
    objective = make_objective(cfg, info)   # the loop's task: loss and metrics of a classifier
"""

from __future__ import annotations

import functools

from pipelines import config as config_lib
from pipelines.config import Config, ConfigError

# train.mixed_precision -> Keras dtype policy.
POLICIES = {"none": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


def make_optimizer(train_cfg: config_lib.TrainConfig, steps_per_epoch: int):
    """The optimizer of ``train``: Adam, AdamW or SGD (Nesterov), on a cosine schedule with linear
    warm-up when ``train.schedule`` is cosine; wrapped for loss scaling under float16."""
    import keras

    lr = train_cfg.learning_rate
    total = max(1, train_cfg.epochs * steps_per_epoch)
    warmup = train_cfg.warmup_epochs * steps_per_epoch
    if train_cfg.schedule == "cosine":
        if warmup:
            schedule = keras.optimizers.schedules.CosineDecay(
                lr * 0.01, decay_steps=max(1, total - warmup), warmup_target=lr, warmup_steps=warmup)
        else:
            schedule = keras.optimizers.schedules.CosineDecay(lr, decay_steps=total)
    else:
        schedule = lr
    name = train_cfg.optimizer
    if name == "adam":
        optimizer = keras.optimizers.Adam(schedule)
    elif name == "adamw":
        optimizer = keras.optimizers.AdamW(schedule, weight_decay=train_cfg.weight_decay)
    else:
        optimizer = keras.optimizers.SGD(schedule, momentum=train_cfg.momentum, nesterov=True)
    if train_cfg.mixed_precision == "float16":
        # float16 gradients underflow without a loss scale; bfloat16 has float32's exponent range.
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def with_precision_policy(fn):
    """Runs ``fn(cfg, ...)`` under the Keras dtype policy of ``cfg.train.mixed_precision``, set
    before any model is built (layers take the policy when created) and restored afterwards, so
    that a process training several configs (tests, sweeps) does not carry one run's policy on."""
    @functools.wraps(fn)
    def wrapper(cfg, *args, **kwargs):
        import keras

        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(POLICIES[cfg.train.mixed_precision])
        try:
            return fn(cfg, *args, **kwargs)
        finally:
            keras.config.set_dtype_policy(previous)
    return wrapper


def build_model(cfg: Config, info: dict, name: str | None = None):
    """The classifier or regressor for a dataset (`pipelines.input.dataset_info`): its task, its F
    and its coordinate features."""
    from setnet.models import build_classifier, build_regressor

    shape = {"num_features": info["num_features"], "spatial_axes": info["spatial_axes"]}
    if name is not None:
        shape["name"] = name
    if info["task"] == "regression":
        return build_regressor(cfg.model, num_targets=info["num_targets"], **shape)
    return build_classifier(cfg.model, num_classes=info["num_classes"], **shape)


def make_objective(cfg: Config, info: dict):
    """The loop's task (`pipelines.tasks`) for the dataset's task and ``train.loss``."""
    from pipelines.tasks import make_task

    try:
        return make_task(info["task"], loss=cfg.train.loss, label_smoothing=cfg.train.label_smoothing,
                         huber_delta=cfg.train.huber_delta)
    except ValueError as e:
        raise ConfigError(f"{e} (dataset {cfg.data.name})") from None


def describe_data(info: dict) -> str:
    """'3-class' or 'regression (2 targets)', and the features per point."""
    what = (f"{info['num_classes']}-class" if info["task"] == "classification" else
            f"regression ({info['num_targets']} target{'s' if info['num_targets'] > 1 else ''}),")
    return f"{what} {info['num_features']}-feature"
