"""A VGG feature extractor read from a local torchvision-format state dict.

Nothing is downloaded: the weights come from a file named by the metric's ``weights``
parameter, or, when that is left empty, by the environment variable ``CVSCORE_VGG_WEIGHTS``.
The file is what ``torch.save(torchvision.models.vgg16(...).state_dict(), path)`` writes
(``vgg16-397923af.pth``, ``vgg19-dcbb9e9d.pth``): keys ``features.<i>.weight`` and
``features.<i>.bias`` at torchvision's layer indices, ``classifier.*`` keys ignored. It is
read with ``torch.load(weights_only=True)``. Whether it is VGG16 or VGG19 is read from its
keys; channel widths are read from its tensors (torchvision's are 64..512; a narrower net of
the same layout loads too, which the tests use to keep exports small).

Only the layers up to the deepest tapped one are kept, as frozen parameters, so an exported
graph carries those weights and nothing else (VGG16 up to ``relu2_2``: 0.26 M parameters;
up to ``relu4_3``: 7.6 M; VGG19 up to ``relu5_1``: 12.9 M at torchvision's widths).

Layer names follow the Caffe/paper convention over torchvision's ``features`` indices:
``conv<b>_<l>`` is a convolution's output, ``relu<b>_<l>`` the rectified one, ``pool<b>``
a max-pool's; a plain integer ``i`` is the output of ``features[i]``. For VGG16,
``relu1_2 = 3``, ``relu2_2 = 8``, ``relu3_3 = 15``, ``relu4_3 = 22``, ``relu5_3 = 29``.

Input normalisation: torchvision's weights expect RGB in [0, 1] standardised with the
ImageNet mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225); with ``normalize=True``
the graph does that itself. Caffe-converted VGG weights (used by Johnson et al. and Gatys
et al.) expect BGR in [0, 255] minus the mean instead; convert such a file before use.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

ENV_WEIGHTS = "CVSCORE_VGG_WEIGHTS"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# torchvision.models.vgg ``cfgs``: channel widths, "M" for a 2x2 max-pool.
CONFIGS: dict[str, list[int | str]] = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}  # fmt: skip


def layer_names(arch: str) -> dict[str, int]:
    """``{"conv1_1": 0, "relu1_1": 1, ..., "pool1": 4, ...}`` for torchvision's ``features``."""
    names: dict[str, int] = {}
    index, block, conv = 0, 1, 1
    for v in CONFIGS[arch]:
        if v == "M":
            names[f"pool{block}"] = index
            index += 1
            block, conv = block + 1, 1
        else:
            names[f"conv{block}_{conv}"] = index
            names[f"relu{block}_{conv}"] = index + 1
            index += 2
            conv += 1
    return names


def conv_indices(arch: str) -> list[int]:
    """torchvision indices of the convolutions of ``arch`` (VGG16: 0, 2, 5, 7, 10, ...)."""
    return [i for n, i in layer_names(arch).items() if n.startswith("conv")]


def pools_before(arch: str, index: int) -> int:
    """How many max-pools run before the output of ``features[index]``."""
    names = layer_names(arch)
    return sum(1 for n, i in names.items() if n.startswith("pool") and i <= index)


def resolve_weights(weights: str) -> str:
    """The weights path: the argument, else ``$CVSCORE_VGG_WEIGHTS``; ValueError when neither."""
    path = str(weights or "") or os.environ.get(ENV_WEIGHTS, "")
    if not path:
        raise ValueError(
            "Expected `weights` to name a torchvision-format VGG16/VGG19 state dict "
            "(e.g. vgg16-397923af.pth), got none: pass weights=PATH (CLI: --weights PATH "
            f"or --param NAME.weights=PATH) or set ${ENV_WEIGHTS}. Nothing is downloaded."
        )
    if not Path(path).is_file():
        raise ValueError(f"Expected `weights` to name a readable file, got {path!r}")
    return path


@lru_cache(maxsize=2)
def _read(path: str, mtime_ns: int, size: int) -> dict[str, Tensor]:
    """The file's tensors, ``classifier.*`` dropped (most of a VGG checkpoint's size)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files, non-tensor payloads
        raise ValueError(
            f"Expected `weights` to be a torch state dict readable with "
            f"torch.load(weights_only=True), got {path!r}: {exc}"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(
            f"Expected `weights` to hold a dict of tensors, got {type(state).__name__}"
        )
    return {k: v for k, v in state.items() if not k.startswith("classifier.")}


def read_state_dict(path: str) -> tuple[str, dict[str, Tensor]]:
    """Load and check a torchvision VGG state dict; return ``(arch, features tensors)``."""
    stat = os.stat(path)
    state = _read(path, stat.st_mtime_ns, stat.st_size)
    feats = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
    indices = sorted({int(k.split(".")[0]) for k in feats if k.split(".")[0].isdigit()})
    if not indices:
        raise ValueError(
            f"Expected `weights` to hold torchvision VGG keys features.<i>.weight/bias, "
            f"got keys {sorted(state)[:6]}"
        )
    if any(k.endswith("running_mean") for k in feats):
        raise ValueError("Expected `weights` of a VGG without batch norm, got a *_bn state dict")
    for arch in ("vgg16", "vgg19"):
        if indices == conv_indices(arch):
            return arch, feats
    raise ValueError(
        f"Expected `weights` to have VGG16 convolutions at features {conv_indices('vgg16')} "
        f"or VGG19 at {conv_indices('vgg19')}, got {indices}"
    )


def parse_layers(text: str, arch: str) -> list[int]:
    """``"relu1_2, relu2_2"`` or ``"3,8"`` -> sorted, distinct torchvision indices."""
    names = layer_names(arch)
    depth = len(CONFIGS[arch]) + sum(1 for v in CONFIGS[arch] if v != "M")
    out: list[int] = []
    for item in (t.strip() for t in str(text).split(",")):
        if not item:
            continue
        if item.isdigit() and int(item) < depth:
            index = int(item)
        elif item in names:
            index = names[item]
        else:
            raise ValueError(
                f"Expected `layers` to name {arch.upper()} layers (conv1_1 .. "
                f"{list(names)[-2]}, relu*, pool*, or indices 0..{depth - 1}), got {item!r}"
            )
        if index in out:
            raise ValueError(f"Expected `layers` to be distinct, got {item!r} twice")
        out.append(index)
    if not out:
        raise ValueError(f"Expected `layers` to name at least one layer, got {text!r}")
    return out


class VGGFeatures(nn.Module):
    """Frozen VGG ``features`` up to the deepest tap; ``forward`` returns the taps in order.

    ``weights``: path of the state dict (empty: ``$CVSCORE_VGG_WEIGHTS``). ``layers``: the
    taps as names or indices (see the module docstring). ``normalize``: standardise inputs
    with the ImageNet mean and std first. ``forward(x: Tensor[B, 3, H, W]) -> list[Tensor]``.
    """

    if TYPE_CHECKING:  # buffers, declared for mypy only: TorchScript reads these annotations
        mean: Tensor
        std: Tensor

    def __init__(self, weights: str, layers: str | Sequence[int], normalize: bool = True) -> None:
        super().__init__()
        path = resolve_weights(weights)
        arch, state = read_state_dict(path)
        taps = parse_layers(layers, arch) if isinstance(layers, str) else list(layers)
        self.arch = arch
        self.path = path
        self.taps = sorted(taps)
        self.pools = pools_before(arch, self.taps[-1])
        self.order = [self.taps.index(t) for t in taps]  # the caller's order

        layers_: list[nn.Module] = []
        in_ch = 3
        conv_at = iter(conv_indices(arch))
        for v in CONFIGS[arch]:
            if len(layers_) > self.taps[-1]:
                break  # nothing deeper than the last tap is built or exported
            if v == "M":
                layers_.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            i = next(conv_at)
            weight, bias = state.get(f"{i}.weight"), state.get(f"{i}.bias")
            if weight is None or bias is None:
                raise ValueError(f"Expected `weights` to hold features.{i}.weight and .bias")
            out_ch = weight.shape[0]
            if tuple(weight.shape) != (out_ch, in_ch, 3, 3) or tuple(bias.shape) != (out_ch,):
                raise ValueError(
                    f"Expected `weights` features.{i}.weight of shape [C_out, {in_ch}, 3, 3] "
                    f"and bias [C_out], got {list(weight.shape)} and {list(bias.shape)}"
                )
            conv = nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1)
            conv.weight = nn.Parameter(weight.float().clone())
            conv.bias = nn.Parameter(bias.float().clone())
            layers_ += [conv, nn.ReLU()]
            in_ch = out_ch
        features = layers_[: self.taps[-1] + 1]

        blocks: list[nn.Module] = []
        start = 0
        for tap in self.taps:
            blocks.append(nn.Sequential(*features[start : tap + 1]))
            start = tap + 1
        self.blocks = nn.ModuleList(blocks)
        self.requires_grad_(False)
        self.normalize = bool(normalize)
        # float64 buffers, cast to the input's dtype in forward: a float32 buffer would carry
        # 0.485 rounded to float32 (a 1e-8 relative error) into a float64 module
        mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def min_size(self) -> int:
        """Smallest H, W for an exported graph: every pooled map must stay at least 2x2."""
        return 2 ** (self.pools + 1)

    def forward(self, x: Tensor) -> list[Tensor]:
        if self.normalize:
            x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        taps: list[Tensor] = []
        for block in self.blocks:
            x = block(x)
            taps.append(x)
        return [taps[i] for i in self.order]

    def pair(self, preds: Tensor, target: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Both images through the net in one batch, split back: ``(taps(preds), taps(target))``."""
        n = preds.shape[0]
        taps = self.forward(torch.cat([preds, target], 0))
        return [t[:n] for t in taps], [t[n:] for t in taps]


def layer_pools(weights: str, layers: str) -> int:
    """Max-pools before the deepest of ``layers`` in the VGG that ``weights`` holds."""
    arch, _ = read_state_dict(resolve_weights(weights))
    return pools_before(arch, max(parse_layers(layers, arch)))


def random_state_dict(
    arch: str = "vgg16", widths: Sequence[int] | None = None, seed: int = 0
) -> dict[str, Tensor]:
    """A seeded random VGG ``features`` state dict in torchvision's key format.

    ``widths`` replaces the channel width of each convolution (default: torchvision's). He
    (fan-in) initialisation keeps activations of order one through the depth. For tests and
    demos: real use needs trained weights.
    """
    gen = torch.Generator().manual_seed(seed)
    convs = [v for v in CONFIGS[arch] if v != "M"]
    widths = list(widths) if widths is not None else [int(v) for v in convs]  # type: ignore[arg-type]
    if len(widths) != len(convs):
        raise ValueError(f"Expected {len(convs)} widths for {arch}, got {len(widths)}")
    state: dict[str, Tensor] = {}
    in_ch = 3
    for i, out_ch in zip(conv_indices(arch), widths, strict=True):
        std = (2.0 / (in_ch * 9)) ** 0.5
        state[f"features.{i}.weight"] = torch.randn(out_ch, in_ch, 3, 3, generator=gen) * std
        state[f"features.{i}.bias"] = torch.randn(out_ch, generator=gen) * 0.05
        in_ch = out_ch
    return state


def vgg_work(sizes: Mapping[str, int], params: Mapping[str, Any]) -> int:
    """Bytes at the peak: VGG's first block holds a few 64-channel float32 maps at full
    resolution for each image of a pair (torchvision's widths; narrower weights need less)."""
    return 2 * 3 * 64 * 4 * sizes.get("N", 0) * sizes.get("H", 0) * sizes.get("W", 0)


def check_tap_size(params: Mapping[str, Any], inputs: Mapping[str, Tensor]) -> None:
    """H, W must keep every tapped map at least 2x2 (what an exported graph needs)."""
    pools = layer_pools(params["weights"], params["layers"])
    need = 2 ** (pools + 1)
    shape = list(inputs["preds"].shape)
    for axis, size in (("H", shape[-2]), ("W", shape[-1])):
        if size < need:
            raise ValueError(
                f"Expected axis {axis} of `preds` to be at least {need} for layers "
                f"{params['layers']!r} ({pools} max-pools), got {size} (shape {shape})"
            )
