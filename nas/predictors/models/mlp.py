"""A small multilayer perceptron on log y, trained with torch, predicting with numpy.

Inputs are standardised with the training rows' statistics and the target is the
standardised log, so one learning rate and weight decay suit every space and metric.
Training is full-batch AdamW for a fixed number of steps on one thread from the seed,
hence reproducible; the weights are then copied to numpy, and prediction (fitted or
loaded from a file) runs the same numpy code, so files round-trip bit for bit and
loading a predictor never imports torch.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin

from nas.predictors.models.base import check_xy, register
from nas.threads import single_threaded


@register("mlp")
class MLP(RegressorMixin, BaseEstimator):
    def __init__(self, hidden: Sequence[int] = (64, 64), steps: int = 600, learning_rate: float = 3e-3,
                 weight_decay: float = 1e-3, random_state: int = 0) -> None:
        self.hidden = hidden
        self.steps = steps
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: np.ndarray) -> "MLP":
        import torch

        with single_threaded():  # torch imported first, so its pool is held at one thread too
            return self._fit(torch, X, y)

    def _fit(self, torch: Any, X: np.ndarray, y: np.ndarray) -> "MLP":
        X, y = check_xy(X, y, positive=True)
        self.x_mean_ = X.mean(axis=0)
        scale = X.std(axis=0)
        self.x_scale_ = np.where(scale > 0, scale, 1.0)
        t = np.log(y)
        self.y_mean_, self.y_scale_ = float(t.mean()), float(t.std() or 1.0)
        gen = torch.Generator().manual_seed(self.random_state)
        sizes = [X.shape[1], *self.hidden, 1]
        layers = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            linear = torch.nn.Linear(a, b)
            bound = 1.0 / np.sqrt(a)
            with torch.no_grad():  # seeded init without touching torch's global generator
                linear.weight.uniform_(-bound, bound, generator=gen)
                linear.bias.uniform_(-bound, bound, generator=gen)
            layers += [linear, torch.nn.ReLU()]
        net = torch.nn.Sequential(*layers[:-1])
        xs = torch.as_tensor((X - self.x_mean_) / self.x_scale_, dtype=torch.float32)
        ts = torch.as_tensor((t - self.y_mean_) / self.y_scale_, dtype=torch.float32)[:, None]
        opt = torch.optim.AdamW(net.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, self.steps)
        for _ in range(self.steps):
            opt.zero_grad()
            loss = torch.mean((net(xs) - ts) ** 2)
            loss.backward()
            opt.step()
            sched.step()
        linears = [m for m in net if isinstance(m, torch.nn.Linear)]
        self.weights_ = [m.weight.detach().numpy().T.copy() for m in linears]
        self.biases_ = [m.bias.detach().numpy().copy() for m in linears]
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        h = (np.asarray(X, dtype=np.float64) - self.x_mean_) / self.x_scale_
        for i, (w, b) in enumerate(zip(self.weights_, self.biases_)):
            h = h @ w + b
            if i < len(self.weights_) - 1:
                h = np.maximum(h, 0.0)
        return np.exp(h[:, 0] * self.y_scale_ + self.y_mean_)

    def to_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        arrays = {"x_mean": self.x_mean_, "x_scale": self.x_scale_}
        for i, (w, b) in enumerate(zip(self.weights_, self.biases_)):
            arrays[f"w{i}"], arrays[f"b{i}"] = w, b
        return {"layers": len(self.weights_), "y_mean": self.y_mean_, "y_scale": self.y_scale_}, arrays

    @classmethod
    def from_state(cls, params: dict, arrays: dict[str, np.ndarray]) -> "MLP":
        model = cls()
        model.x_mean_, model.x_scale_ = arrays["x_mean"], arrays["x_scale"]
        model.y_mean_, model.y_scale_ = params["y_mean"], params["y_scale"]
        model.weights_ = [arrays[f"w{i}"] for i in range(params["layers"])]
        model.biases_ = [arrays[f"b{i}"] for i in range(params["layers"])]
        return model
