"""Static description of one weight layer (Conv2d or Linear) of a network.

Recorded once, from a traced forward pass, when a model is converted to a supernet; the
cost model and the mapping files use it, so that costs never need a live model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class LayerInfo:
    name: str                 # dotted module path in the original model, e.g. "layer1.0.conv1"
    kind: str                 # "conv" or "linear"
    in_features: int          # conv: in_channels;  linear: in_features
    out_features: int         # conv: out_channels; linear: out_features
    kernel_size: tuple[int, int] = (1, 1)
    groups: int = 1
    has_bias: bool = False
    macs: int = 0             # multiply-accumulates per sample (one image), from the traced pass
    out_positions: int = 1    # output spatial positions per sample (conv: H_out*W_out; linear: tokens)

    @property
    def params(self) -> int:
        """Weight (+bias) parameter count."""
        return self.weight_rows * self.weight_cols * self.groups + (self.out_features if self.has_bias else 0)

    @property
    def weight_rows(self) -> int:
        """Rows of the crossbar matrix per group: one per output channel of the group."""
        return self.out_features // self.groups

    @property
    def weight_cols(self) -> int:
        """Columns of the crossbar matrix per group: inputs (in/groups * kh * kw)."""
        return (self.in_features // self.groups) * self.kernel_size[0] * self.kernel_size[1]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["kernel_size"] = list(self.kernel_size)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "LayerInfo":
        d = dict(d)
        d["kernel_size"] = tuple(d.get("kernel_size", (1, 1)))
        return cls(**d)
