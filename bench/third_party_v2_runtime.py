"""An MLServer custom runtime: a TorchScript image classifier's softmax probabilities as a V2 (Open Inference
Protocol) model. Self-contained (mlserver, numpy, torch; no stealbench): bench/third_party_v2.py copies it into an
MLServer model folder as `torch_probs.py`, next to `model.pt` and a model-settings.json naming
`torch_probs.TorchProbs`.

One input tensor [B, C, H, W], FP32 pixels in [0, 1] or UINT8 pixels in 0..255 (the shape model-settings.json's
`inputs` declares, any B >= 1); one output `probs` [B, K] FP32. A request that does not fit is answered 400 with
a message (MLServer's InferenceError).
"""

from __future__ import annotations

import numpy as np
import torch
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.errors import InferenceError
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri

#: the most images one request may carry (an extra parameter of model-settings.json overrides it)
MAX_BATCH = 1024


class TorchProbs(MLModel):
    async def load(self) -> bool:
        torch.set_num_threads(1)
        self._net = torch.jit.load(await get_model_uri(self.settings, wellknown_filenames=["model.pt"]),
                                   map_location="cpu").eval()
        declared = self.settings.inputs[0].shape if self.settings.inputs else None
        if not declared or len(declared) != 4:
            raise ValueError("model-settings.json must declare one input shaped [-1, C, H, W]")
        self._image_shape = [int(s) for s in declared[1:]]
        extra = (self.settings.parameters.extra if self.settings.parameters else None) or {}
        self._max_batch = int(extra.get("max_batch", MAX_BATCH))
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        if len(payload.inputs) != 1:
            raise InferenceError(f"this model takes exactly one input tensor, got {len(payload.inputs)}")
        tensor = payload.inputs[0]
        shape = list(tensor.shape)
        if len(shape) != 4 or shape[1:] != self._image_shape or shape[0] < 1:
            raise InferenceError(f"wrong shape {shape}: this model takes images shaped [B, "
                                 f"{', '.join(map(str, self._image_shape))}] with B >= 1")
        if shape[0] > self._max_batch:
            raise InferenceError(f"batch of {shape[0]} images exceeds this model's max_batch {self._max_batch}")
        if tensor.datatype not in ("FP32", "UINT8"):
            raise InferenceError(f"wrong datatype {tensor.datatype}: this model takes FP32 (pixels in [0, 1]) or "
                                 "UINT8 (0..255)")
        try:
            x = np.asarray(NumpyCodec.decode_input(tensor), dtype=np.float32)
        except (ValueError, TypeError) as exc:
            raise InferenceError(f"the input's data does not fit its shape {shape}: {exc}") from None
        if tensor.datatype == "UINT8":
            x = x / 255.0
        if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
            raise InferenceError("pixels must be finite and lie in [0, 1] (FP32) or 0..255 (UINT8)")
        with torch.no_grad():
            probs = torch.softmax(self._net(torch.from_numpy(np.ascontiguousarray(x))).float(), dim=-1)
        return InferenceResponse(model_name=self.name, model_version=self.version,
                                 outputs=[NumpyCodec.encode_output("probs", probs.numpy().astype(np.float32))])
