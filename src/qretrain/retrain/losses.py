"""Losses between output vectors (label-free) or against labels (conventional)."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from qretrain.retrain.config import Loss


def output_loss(logits: torch.Tensor, target: torch.Tensor, loss: Loss, temperature: float):
    """logits (N, C); target: teacher logits (N, C), or labels (N,) for CE."""
    if loss is Loss.CE:
        return F.cross_entropy(logits, target)
    if loss is Loss.MSE:
        return F.mse_loss(logits, target)
    # KL(teacher_T || student_T), scaled by T^2 so gradients keep their size (Hinton).
    log_student = F.log_softmax(logits / temperature, dim=1)
    log_teacher = F.log_softmax(target / temperature, dim=1)
    kl = F.kl_div(log_student, log_teacher, log_target=True, reduction="batchmean")
    return kl * temperature**2
