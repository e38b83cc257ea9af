"""The served form of a trained model: an MLflow `PythonModel` that takes images as clients hold
them and answers with class names and probabilities, preprocessing and TTA done inside from the
checkpoint's own record (the one prediction path of `LoadedModel.predict_proba`).

Input: a DataFrame column `image` whose values are encoded image bytes (PNG, JPEG, ... as read
from a file), base64 strings of such bytes, or, for local use, paths of image files. Through
`mlflow models serve`, post `{"dataframe_split": {"columns": ["image"], "data": [["<base64>"]]}}`:
the column is typed binary, so MLflow's scoring server decodes the base64 itself.
Output: one row per image with `predicted`, `probability` and `p_<class>` per class, the columns
of `task=predict`'s CSV.
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd

INPUT_COLUMN = "image"
CHECKPOINT_ARTIFACT = "checkpoint"
BATCH_SIZE = 64


def decode_image(value: Any) -> Any:
    """One input cell -> a PIL image: bytes are the encoded file, a string is a path of an existing
    file or else base64 of the file's bytes. Raises ValueError naming what could not be read."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(value, str):
        if len(value) < 4096 and Path(value).is_file():
            data = Path(value).read_bytes()
        else:
            try:
                data = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError(
                    f"image {value[:60]!r} is neither a file that exists nor base64-encoded image bytes"
                ) from None
    elif isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
    else:
        raise ValueError(
            f"an image must be bytes, a base64 string or a file path, not {type(value).__name__}"
        )
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return image.copy()
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"could not decode an image of {len(data)} bytes ({exc})") from None


class ImageClassifier(mlflow.pyfunc.PythonModel):
    """Images in, class names and probabilities out (see the module docstring)."""

    def load_context(self, context: Any) -> None:
        from lrlab.models.checkpoint import load_model

        self.loaded = load_model(context.artifacts[CHECKPOINT_ARTIFACT])

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """`model_input`: a DataFrame with an `image` column (see the module docstring); one row
        of class names and probabilities per image."""
        if INPUT_COLUMN not in model_input.columns:
            raise ValueError(f"expected a column {INPUT_COLUMN!r}, got {list(model_input.columns)}")
        values: Sequence[Any] = model_input[INPUT_COLUMN].tolist()
        images = [decode_image(v) for v in values]
        rows = []
        for start in range(0, len(images), BATCH_SIZE):
            rows += self.loaded.prediction_rows(images[start : start + BATCH_SIZE])
        return pd.DataFrame(rows, columns=self.loaded.prediction_columns)
