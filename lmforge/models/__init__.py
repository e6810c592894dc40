"""Backbones and the task model that composes a backbone with heads."""

from lmforge.models.backbone import Backbone, BackboneOutput
from lmforge.models.task_model import TaskModel, build_model, load_model, save_model

__all__ = ["Backbone", "BackboneOutput", "TaskModel", "build_model", "load_model", "save_model"]
