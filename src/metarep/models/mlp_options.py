"""The [model] keys of arch "mlp" (read by config validation: no torch, no engine here)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Options(BaseModel):
    """[model] keys of arch "mlp"."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    layers: Annotated[int, Field(ge=2, strict=True)] = 2
    """2: w^T act(W1 x); 3: w^T act(W2 act(W1 x)); L >= 2: L - 1 layers before the head w"""
    hidden: Annotated[int, Field(ge=1, strict=True)] | None = None
    """units of every layer but the last when layers >= 3 (default problem.d)"""
    activation: Literal["relu", "identity"] = "relu"
    bias: bool = False
    dtype: Literal["float64", "float32"] = "float64"
    """the precision the network is trained in"""

    @model_validator(mode="after")
    def _hidden_needs_three_layers(self):
        if self.hidden is not None and self.layers < 3:
            raise ValueError("model.hidden is the width of every layer but the last of a network of three or more "
                             "layers: set model.layers = 3 or more, or leave hidden out")
        return self
