"""Backbones and the task model that composes a backbone with heads."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lmforge.lazy import lazy_exports

# Imported on first use (PEP 562): the heads import lmforge.models.backbone, and task_model imports
# the heads, so importing lmforge.heads (or lmforge.tasks) first must not pull in task_model.
_EXPORTS = {
    "Backbone": "lmforge.models.backbone",
    "BackboneOutput": "lmforge.models.backbone",
    "TaskModel": "lmforge.models.task_model",
    "build_model": "lmforge.models.task_model",
    "load_model": "lmforge.models.task_model",
    "save_model": "lmforge.models.task_model",
}

if TYPE_CHECKING:
    from lmforge.models.backbone import Backbone, BackboneOutput
    from lmforge.models.task_model import TaskModel, build_model, load_model, save_model


__getattr__ = lazy_exports("lmforge.models", _EXPORTS, globals())


__all__ = ["Backbone", "BackboneOutput", "TaskModel", "build_model", "load_model", "save_model"]
