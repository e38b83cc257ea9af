"""How one image file becomes a model input exactly as the evaluation split's images did: stored
in every checkpoint, so a saved model predicts on new files without its training data.

Three ways lrlab's sources prepare evaluation images, each reproduced here:
- `square`: the in-memory sources (ELPV, digits, mnist5k) resize the whole image to
  image_size x image_size (bilinear, antialiased), keeping the source's channels (1: grayscale);
- `crop`: file datasets decoded into memory (`in_memory`) resize the shorter side, then centre-crop;
- `timm`: file datasets read per epoch use timm's evaluation transform (resize by crop_pct, crop).
Then every image is scaled to 0..1, repeated to 3 channels when grey, and normalised.

`interpolation` and `antialias` record the resize the code really does (bilinear, antialiased, for
`square` and `crop`; the model's own interpolation through PIL for `timm`), so that a client
following the metadata with PIL alone (`Image.resize(size, Image.BILINEAR)`) gets the same inputs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

KINDS = ("square", "crop", "timm")


@dataclass(frozen=True)
class Preprocess:
    """The evaluation preprocessing of a trained model: `kind` (see the module docstring), the
    image size, the source's channels (1 or 3), the model's normalisation, and the resize used."""

    kind: str
    image_size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"
    antialias: bool = True

    @classmethod
    def of(cls, kind: str, image_size: int, channels: int, norm: Any) -> Preprocess:
        """The preprocessing of a source sized `kind`, for a model normalised by `norm`
        (`data.types.Normalization`): only `timm` resizes with the model's interpolation."""
        interpolation = norm.interpolation if kind == "timm" else "bilinear"
        return cls(kind, image_size, channels, tuple(norm.mean), tuple(norm.std), interpolation, True)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocess:
        return cls(**{**data, "mean": tuple(data["mean"]), "std": tuple(data["std"])})

    def to_png(self, x: torch.Tensor) -> bytes:
        """A normalised (3, H, W) input back to PNG bytes (grey when the source is): a real image a
        client could send, e.g. a logged model's input example."""
        import io

        from PIL import Image

        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        pixels = (x.detach().float().cpu() * std + mean).clamp(0, 1).mul(255).round().to(torch.uint8)
        array = pixels[0].numpy() if self.channels == 1 else pixels.permute(1, 2, 0).numpy()
        buffer = io.BytesIO()
        Image.fromarray(array, mode="L" if self.channels == 1 else "RGB").save(buffer, format="PNG")
        return buffer.getvalue()

    def __call__(self, image: Any) -> torch.Tensor:
        """A PIL image -> a normalised float (3, image_size, image_size) tensor."""
        if self.kind == "timm":
            from timm.data import create_transform

            transform = create_transform(
                input_size=(3, self.image_size, self.image_size),
                is_training=False,
                mean=self.mean,
                std=self.std,
                interpolation=self.interpolation,
            )
            return transform(image.convert("RGB"))
        from torchvision.transforms.v2.functional import center_crop, pil_to_tensor, resize

        pixels = pil_to_tensor(image.convert("L" if self.channels == 1 else "RGB"))
        if self.kind == "crop":
            pixels = center_crop(resize(pixels, self.image_size, antialias=True), self.image_size)
        elif pixels.shape[-2:] != (self.image_size, self.image_size):
            size = (self.image_size, self.image_size)
            resized = F.interpolate(pixels[None].float(), size=size, mode="bilinear", antialias=True)
            pixels = resized.round_().clamp_(0, 255).to(torch.uint8)[0]
        x = pixels.float().expand(3, -1, -1) / 255.0
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return (x - mean) / std
