"""amnesiac: per-sample amnesiac unlearning in PyTorch.

Log each sample's (or group's) share of every parameter update during training, then forget a group by
subtracting its share, and measure the result against retraining from scratch.

Example:
    >>> import torch, amnesiac
    >>> from torch import nn
    >>> model = nn.Linear(4, 2)
    >>> data = amnesiac.ArrayDataset(torch.randn(16, 4), torch.arange(16) % 2, torch.arange(16))
    >>> log = amnesiac.DeltaLog(model, {"a": [0, 1, 2]})
    >>> opt = torch.optim.Adam(model.parameters())
    >>> _ = amnesiac.train(model, data.loader(4), opt, epochs=1, delta_log=log, progress=False)
    >>> forgotten = amnesiac.unlearn("amnesiac", model, amnesiac.Request(forget_groups=("a",)), log=log)
"""

from .attributed import AttributedOptimizer
from .batchlog import BatchLog
from .data import (
    ArrayDataset,
    BatchLoader,
    class_group,
    class_ids,
    groups_by_class,
    groups_by_user,
    groups_per_sample,
    random_ids,
    test_views,
)
from .deltalog import DeltaLog
from .distributed import ShardedDeltaLog, unlearn_sharded
from .distributed import attach as attach_ddp
from .grads import ParamLayout, per_sample_grads
from .layers import register_layer_rule
from .ledger import GroupTable, Ledger, ledger_fingerprint, load_ledger, save_ledger
from .record import RequestRecord, model_fingerprint
from .rewind import RewindRecord, rewind_unlearn
from .rules import Step, register_update_rule, supported_optimizers
from .sisa import SisaEnsemble, SisaRecord, sisa_train, sisa_unlearn
from .training import History, Recipe, accuracy, pick_device, pick_reproducible_device, predict, train
from .unlearning import METHODS, Request, method_params, repair, unlearn

__version__ = "0.1.0"

__all__ = [
    "ArrayDataset",
    "AttributedOptimizer",
    "BatchLoader",
    "BatchLog",
    "DeltaLog",
    "GroupTable",
    "History",
    "Ledger",
    "METHODS",
    "ParamLayout",
    "Recipe",
    "Request",
    "RewindRecord",
    "Step",
    "accuracy",
    "class_group",
    "class_ids",
    "groups_by_class",
    "groups_by_user",
    "groups_per_sample",
    "ledger_fingerprint",
    "load_ledger",
    "method_params",
    "per_sample_grads",
    "pick_device",
    "pick_reproducible_device",
    "predict",
    "random_ids",
    "register_layer_rule",
    "register_update_rule",
    "repair",
    "rewind_unlearn",
    "save_ledger",
    "sisa_train",
    "sisa_unlearn",
    "RequestRecord",
    "ShardedDeltaLog",
    "SisaEnsemble",
    "SisaRecord",
    "attach_ddp",
    "model_fingerprint",
    "supported_optimizers",
    "test_views",
    "train",
    "unlearn",
    "unlearn_sharded",
]
