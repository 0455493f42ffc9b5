"""Learned-feature losses on a frozen VGG, per sample.

Every metric here runs both images through one VGG read from a local torchvision-format
state dict (parameter ``weights``; see :mod:`metrics._vgg` for the format, the layer names
and ``$CVSCORE_VGG_WEIGHTS``). Without a weights file they refuse with a ValueError naming
``weights``; nothing is downloaded. The weights of the layers used are baked into the
exported graph.

Images are ``Tensor[N, 3, H, W]`` RGB in [0, 1]; with ``normalize=True`` (the default for the
image losses) the graph standardises them with the ImageNet mean (0.485, 0.456, 0.406) and
std (0.229, 0.224, 0.225), as torchvision's weights expect. Each tapped map must stay at
least 2x2 in an exported graph, so H and W must be at least ``2^(pools + 1)`` where
``pools`` counts the max-pools before the deepest tap (relu2_2: 4, relu4_3: 16,
relu5_1: 32). Every function returns ``Tensor[N]`` (lower is better).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ._utils import check_unit_interval, per_sample_mean
from ._vgg import ENV_WEIGHTS, VGGFeatures, check_tap_size, resolve_weights, vgg_work
from .pixel import binary_cross_entropy
from .registry import MetricSpec, ParamSpec, TensorSpec, register
from .samples import features as samples

FAMILY = "features"
IMAGES = (
    TensorSpec("preds", ("N", 3, "H", "W"), "float32", "generated RGB images in [0, 1]"),
    TensorSpec("target", ("N", 3, "H", "W"), "float32", "reference RGB images in [0, 1]"),
)
SCORE = (TensorSpec("score", ("N",), "float32", "per-sample loss"),)
REQUIRES = {"weights": ENV_WEIGHTS}

PERCEPTUAL_LAYERS = "relu2_2"
STYLE_LAYERS = "relu1_2,relu2_2,relu3_3,relu4_3"
TEXTURE_LAYERS = "relu1_1,relu2_1,relu3_1,relu4_1,relu5_1"
TOPOLOGY_LAYERS = "conv1_2,conv2_2,conv3_4"


# -- functional core on feature maps ------------------------------------------------------
def gram(features: Tensor) -> Tensor:
    """Unnormalised Gram matrix per sample: ``[N, C, H, W] -> [N, C, C]``, ``G = F Fᵀ``.

    ``F`` is the map flattened to ``[C, H W]``, so ``G_ij = Σ_k F_ik F_jk``.
    """
    flat = features.flatten(2)
    return torch.bmm(flat, flat.transpose(1, 2))


def feature_reconstruction(feats: list[Tensor], refs: list[Tensor]) -> Tensor:
    """``Σ_layers ||φ(ŷ) - φ(y)||² / (C H W)``: per-layer mean squared difference, summed."""
    total = torch.zeros_like(feats[0][:, 0, 0, 0])
    for i in range(len(feats)):
        total = total + per_sample_mean((feats[i] - refs[i]).square())
    return total


def style_reconstruction(feats: list[Tensor], refs: list[Tensor]) -> Tensor:
    """``Σ_layers ||G(ŷ) - G(y)||²_F`` with Johnson's normalised ``G = F Fᵀ / (C H W)``."""
    total = torch.zeros_like(feats[0][:, 0, 0, 0])
    for i in range(len(feats)):
        f = feats[i]
        size = f.shape[1] * f.shape[2] * f.shape[3]
        diff = (gram(f) - gram(refs[i])) / size
        total = total + diff.square().sum((1, 2))
    return total


def texture_synthesis(feats: list[Tensor], refs: list[Tensor], weights: list[float]) -> Tensor:
    """``Σ_l w_l / (4 N_l² M_l²) Σ_ij (G_ij - A_ij)²`` with unnormalised Gram matrices.

    ``N_l`` is the layer's channel count, ``M_l = H_l W_l`` its number of positions.
    """
    total = torch.zeros_like(feats[0][:, 0, 0, 0])
    for i in range(len(feats)):
        f = feats[i]
        # (G - A)² / (4 N² M²) == ((G - A) / (2 N M))²
        diff = (gram(f) - gram(refs[i])) / (2 * f.shape[1] * f.shape[2] * f.shape[3])
        total = total + weights[i] * diff.square().sum((1, 2))
    return total


# -- functional API (loads the backbone) ---------------------------------------------------
def _backbone(weights: str, layers: str, normalize: bool, like: Tensor) -> VGGFeatures:
    return VGGFeatures(weights, layers, normalize).to(like.device, like.dtype).eval()


def perceptual(
    preds: Tensor,
    target: Tensor,
    weights: str = "",
    layers: str = PERCEPTUAL_LAYERS,
    normalize: bool = True,
) -> Tensor:
    """Perceptual (feature reconstruction) loss per image.

    ``ℓ = Σ_j 1/(C_j H_j W_j) ||φ_j(preds) - φ_j(target)||²₂`` over the VGG taps ``j`` in
    ``layers`` (default ``relu2_2``, Johnson et al.'s choice on VGG16).
    preds, target (Tensor[N, 3, H, W]) RGB in [0, 1]. Returns Tensor[N] >= 0, 0 for
    identical images. Johnson et al. 2016, https://arxiv.org/abs/1603.08155.
    Conventions differ: LPIPS-style losses unit-normalise channels and learn weights; many
    reimplementations use ``F.l1_loss`` or sum several layers with weights; Johnson used
    Caffe VGG16 weights (BGR, 0-255), not torchvision's.
    """
    fp, ft = _backbone(weights, layers, normalize, preds).pair(preds, target)
    return feature_reconstruction(fp, ft)


def style(
    preds: Tensor,
    target: Tensor,
    weights: str = "",
    layers: str = STYLE_LAYERS,
    normalize: bool = True,
) -> Tensor:
    """Style reconstruction (Gram-matrix) loss per image, Johnson et al.'s form.

    ``ℓ = Σ_j ||G_j(preds) - G_j(target)||²_F`` with ``G_j = ψ ψᵀ / (C_j H_j W_j)``, ``ψ``
    the ``C_j x H_j W_j`` feature map at tap ``j`` (default relu1_2, relu2_2, relu3_3,
    relu4_3 of VGG16). preds, target (Tensor[N, 3, H, W]) RGB in [0, 1]. Returns Tensor[N].
    Johnson et al. 2016, https://arxiv.org/abs/1603.08155. Gatys et al. normalise by
    ``4 N² M²`` instead (:func:`texture`); other libraries divide the Gram by ``H W`` only.
    """
    fp, ft = _backbone(weights, layers, normalize, preds).pair(preds, target)
    return style_reconstruction(fp, ft)


def texture(
    preds: Tensor,
    target: Tensor,
    weights: str = "",
    layers: str = TEXTURE_LAYERS,
    layer_weights: list[float] | None = None,
    normalize: bool = True,
) -> Tensor:
    """Texture / style loss of Gatys et al. per image.

    ``L = Σ_l w_l E_l``, ``E_l = 1/(4 N_l² M_l²) Σ_ij (G^l_ij - A^l_ij)²`` with the
    unnormalised Gram matrices ``G = F Fᵀ`` of preds and ``A`` of target, ``N_l`` channels
    and ``M_l = H_l W_l`` positions at layer ``l``. Default layers relu1_1 .. relu5_1 with
    ``w_l = 1/5`` (Gatys et al. 2016, "Image Style Transfer Using CNNs", CVPR, which uses
    VGG19; Gatys et al. 2015 texture synthesis, https://arxiv.org/abs/1505.07376, taps
    conv1_1 and pool1..pool4 instead). ``layer_weights`` in the order of ``layers``; None:
    equal weights summing to 1. Returns Tensor[N].
    """
    names = [t for t in layers.split(",") if t.strip()]
    w = layer_weights if layer_weights is not None else [1.0 / len(names)] * len(names)
    fp, ft = _backbone(weights, layers, normalize, preds).pair(preds, target)
    return texture_synthesis(fp, ft, [float(v) for v in w])


def topology(
    preds: Tensor,
    target: Tensor,
    weights: str = "",
    layers: str = TOPOLOGY_LAYERS,
    mu: float = 0.1,
    normalize: bool = False,
) -> Tensor:
    """Topology-aware delineation loss of Mosinska et al. per mask.

    ``L = BCE(preds, target) + μ Σ_n 1/(C_n H_n W_n) ||l_n(target) - l_n(preds)||²₂``
    where ``l_n`` is the VGG19 map at tap ``n`` (default conv1_2, conv2_2, conv3_4: the
    paper's layers, before their ReLU) and the masks are repeated to three channels.
    BCE is the per-pixel mean, as ``F.binary_cross_entropy`` (logs clamped at -100).
    preds (Tensor[N, H, W]) foreground probabilities in [0, 1]; target (Tensor[N, H, W])
    binary masks. Returns Tensor[N]. Mosinska et al. 2018, https://arxiv.org/abs/1712.02190.
    Conventions: μ = 0.1 and the per-layer mean follow public reimplementations (the paper
    writes an unnormalised sum and tunes μ); masks are not ImageNet-standardised by default.
    """
    fp, ft = _backbone(weights, layers, normalize, preds).pair(_rgb(preds), _rgb(target))
    return topology_from_features(preds, target, fp, ft, mu)


def _rgb(masks: Tensor) -> Tensor:
    """``[N, H, W] -> [N, 3, H, W]``: a mask repeated on three channels."""
    return masks.unsqueeze(1).expand(-1, 3, -1, -1)


def topology_from_features(
    preds: Tensor, target: Tensor, feats: list[Tensor], refs: list[Tensor], mu: float
) -> Tensor:
    """``BCE(preds, target) + μ Σ_n mean (l_n(preds) - l_n(target))²`` given the VGG taps."""
    return binary_cross_entropy(preds, target) + mu * feature_reconstruction(feats, refs)


# -- modules ------------------------------------------------------------------------------
class Perceptual(nn.Module):
    def __init__(
        self, weights: str = "", layers: str = PERCEPTUAL_LAYERS, normalize: bool = True
    ) -> None:
        super().__init__()
        self.backbone = VGGFeatures(weights, layers, normalize)

    def forward(self, preds: Tensor, target: Tensor) -> Tensor:
        fp, ft = self.backbone.pair(preds, target)
        return feature_reconstruction(fp, ft)


class Style(nn.Module):
    def __init__(
        self, weights: str = "", layers: str = STYLE_LAYERS, normalize: bool = True
    ) -> None:
        super().__init__()
        self.backbone = VGGFeatures(weights, layers, normalize)

    def forward(self, preds: Tensor, target: Tensor) -> Tensor:
        fp, ft = self.backbone.pair(preds, target)
        return style_reconstruction(fp, ft)


class Texture(nn.Module):
    def __init__(
        self,
        weights: str = "",
        layers: str = TEXTURE_LAYERS,
        layer_weights: list[float] | None = None,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        self.backbone = VGGFeatures(weights, layers, normalize)
        count = len(self.backbone.taps)
        w = layer_weights if layer_weights is not None else [1.0 / count] * count
        if len(w) != count:
            raise ValueError(
                f"Expected `layer_weights` to have one entry per layer ({count}), got {len(w)}"
            )
        self.layer_weights = [float(v) for v in w]

    def forward(self, preds: Tensor, target: Tensor) -> Tensor:
        fp, ft = self.backbone.pair(preds, target)
        return texture_synthesis(fp, ft, self.layer_weights)


class Topology(nn.Module):
    def __init__(
        self,
        weights: str = "",
        layers: str = TOPOLOGY_LAYERS,
        mu: float = 0.1,
        normalize: bool = False,
    ) -> None:
        super().__init__()
        self.backbone = VGGFeatures(weights, layers, normalize)
        self.mu = float(mu)

    def forward(self, preds: Tensor, target: Tensor) -> Tensor:
        fp, ft = self.backbone.pair(_rgb(preds), _rgb(target))
        return topology_from_features(preds, target, fp, ft, self.mu)


# -- domain checks ------------------------------------------------------------------------
def _validate_images(params: Mapping[str, Any], inputs: Mapping[str, Tensor]) -> None:
    resolve_weights(params["weights"])
    check_tap_size(params, inputs)
    weights = params.get("layer_weights")
    if weights is not None:
        count = len([t for t in params["layers"].split(",") if t.strip()])
        if len(weights) != count:
            raise ValueError(
                f"Expected `layer_weights` to have one entry per layer ({count}), got {len(weights)}"
            )


def _validate_topology(params: Mapping[str, Any], inputs: Mapping[str, Tensor]) -> None:
    resolve_weights(params["weights"])
    check_tap_size(params, inputs)
    if params["mu"] < 0:
        raise ValueError(f"Expected `mu` to be non-negative, got {params['mu']}")
    check_unit_interval("preds", inputs["preds"])
    check_unit_interval("target", inputs["target"])


# -- registry -----------------------------------------------------------------------------
_WEIGHTS = ParamSpec(
    "weights",
    "",
    f"torchvision VGG16/VGG19 state dict (.pth); empty: ${ENV_WEIGHTS}; nothing is downloaded",
)
_NORMALIZE = ParamSpec("normalize", True, "standardise inputs with the ImageNet mean and std")
_JOHNSON = "Johnson et al. 2016, Perceptual Losses, arXiv:1603.08155"


def _image_spec(name, module, functional, summary, paper, oracle, layers, low, size, params=()):
    return register(
        MetricSpec(
            name=name,
            family=FAMILY,
            module=module,
            functional=functional,
            inputs=IMAGES,
            outputs=SCORE,
            params=(_WEIGHTS, ParamSpec("layers", layers, "VGG taps, comma-separated"), *params),
            higher_is_better=False,
            paper=paper,
            oracle=oracle,
            sample=samples.sample_images,
            regimes={"extreme": samples.images_extreme, "degenerate": samples.images_degenerate},
            summary=summary,
            validate=_validate_images,
            example_sizes={"N": 3, "H": size, "W": size + 2},
            work=vgg_work,
            min_sizes={"H": low, "W": low},
            requires=REQUIRES,
        )
    )


_image_spec(
    "perceptual",
    Perceptual,
    perceptual,
    "VGG feature reconstruction loss (relu2_2)",
    _JOHNSON,
    "hand-built layer taps (F.conv2d/relu/max_pool2d) and numpy squared error",
    PERCEPTUAL_LAYERS,
    4,
    8,
    (_NORMALIZE,),
)
_image_spec(
    "style",
    Style,
    style,
    "Gram-matrix style loss, Johnson normalisation",
    _JOHNSON,
    "hand-built layer taps and numpy Gram matrices",
    STYLE_LAYERS,
    16,
    16,
    (_NORMALIZE,),
)
_image_spec(
    "texture",
    Texture,
    texture,
    "Gram-matrix texture loss, Gatys 1/(4 N^2 M^2)",
    "Gatys et al. 2015, Texture Synthesis Using CNNs, arXiv:1505.07376; "
    "Gatys et al. 2016, Image Style Transfer Using CNNs (CVPR)",
    "hand-built layer taps and numpy Gram matrices",
    TEXTURE_LAYERS,
    32,
    32,
    (
        ParamSpec("layer_weights", None, "per-layer weights w_l in layer order; None: 1/L"),
        _NORMALIZE,
    ),
)

register(
    MetricSpec(
        name="topology",
        family=FAMILY,
        module=Topology,
        functional=topology,
        inputs=(
            TensorSpec("preds", ("N", "H", "W"), "float32", "foreground probabilities"),
            TensorSpec("target", ("N", "H", "W"), "float32", "binary masks"),
        ),
        outputs=SCORE,
        params=(
            ParamSpec(
                "weights",
                "",
                f"torchvision VGG19 state dict (.pth); empty: ${ENV_WEIGHTS}; nothing is downloaded",
            ),
            ParamSpec("layers", TOPOLOGY_LAYERS, "VGG19 taps, comma-separated"),
            ParamSpec("mu", 0.1, "weight of the VGG feature term"),
            ParamSpec("normalize", False, "standardise the 3-channel masks with ImageNet stats"),
        ),
        higher_is_better=False,
        paper="Mosinska et al. 2018, Beyond the Pixel-Wise Loss, arXiv:1712.02190",
        oracle="torch.nn.functional.binary_cross_entropy + hand-built VGG19 layer taps",
        sample=samples.sample_masks,
        regimes={"extreme": samples.masks_extreme, "degenerate": samples.masks_degenerate},
        summary="pixel BCE + mu * VGG19 feature loss on masks",
        validate=_validate_topology,
        example_sizes={"N": 3, "H": 8, "W": 10},
        work=vgg_work,
        min_sizes={"H": 8, "W": 8},
        requires=REQUIRES,
    )
)
