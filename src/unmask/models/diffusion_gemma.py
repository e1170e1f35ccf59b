"""DiffusionGemma (``transformers.models.diffusion_gemma``) behind the MDM interface, on transformers' own classes.

``DiffusionGemmaForBlockDiffusion`` is block diffusion with an encoder and a decoder that share their weights: the
encoder reads the prompt and every finished canvas causally into a key/value cache; the decoder refines one canvas
of ``config.canvas_length`` tokens bidirectionally against that cache, its input embeddings conditioned on the
previous step's logits (self-conditioning, ``DiffusionGemmaSelfConditioning``); logits are soft-capped in float32.
The canvas is *uniform-state*: it starts as uniform random tokens and every step keeps some positions and renoises
the rest (:mod:`unmask.engine.canvas`), so the model has no mask token and ``canvas = "uniform"``.

:class:`DiffusionGemma` exposes those two forwards, :meth:`~DiffusionGemma.encode` and
:meth:`~DiffusionGemma.denoise`, called exactly as ``DiffusionGemmaGenerationMixin.generate`` calls them (same
masks from the model's own mask builders, same position ids), which is what the engine's ``encoder`` cache
strategy (:class:`unmask.engine.cache.EncoderCache`) drives. No code is copied and nothing from a checkpoint runs.
"""

from __future__ import annotations

from typing import Any

import torch

from unmask.models.base import MDMOutput
from unmask.models.hf import HFMaskedDiffusionModel, HFStyle

STYLE = HFStyle("diffusion_gemma", 0, False)


class DiffusionGemma(HFMaskedDiffusionModel):
    """A ``DiffusionGemmaForBlockDiffusion`` and its tokenizer (load with ``load_model("hf:PATH")``).

    ``mask_id`` only marks the positions to generate in an input (the tokenizer's mask token, else the pad token):
    the decoder never reads it. Hidden features for learned policies are one layer of the decoder's
    ``output_hidden_states`` (``hidden_layer``, default the last), at the canvas positions."""

    canvas = "uniform"
    cache_modes = ("encoder",)

    def __init__(self, model: torch.nn.Module, tokenizer: Any, name: str, hidden_layer: int = -1) -> None:
        text = model.config.text_config
        placeholder = tokenizer.mask_token_id if tokenizer.mask_token_id is not None else text.pad_token_id
        if placeholder is None:
            placeholder = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        super().__init__(model, tokenizer, STYLE, placeholder, name, hidden_layer)
        self.cache_modes = DiffusionGemma.cache_modes
        self.canvas_length = int(model.config.canvas_length)

    def _sizes(self) -> tuple[int, int]:
        text = self.model.config.text_config
        return self.model.lm_head.out_features, text.hidden_size

    def forward(self, input_ids, attention_mask=None, output_hidden_states=False, cache=None) -> MDMOutput:
        raise ValueError(
            f"{self.name}: DiffusionGemma has no forward over a whole sequence: it encodes the context and denoises "
            "one canvas (encode / denoise), which unmask's engine drives (unmask.engine.loop.generate); "
            "token likelihoods and MDM training are not defined for it"
        )

    def new_cache(self) -> Any:
        """An empty key/value cache for :meth:`encode` (the ``DynamicCache`` ``generate()`` makes by default)."""
        from transformers import DynamicCache

        return DynamicCache(config=self.model.config.get_text_config(decoder=True))

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, cache: Any, start: int) -> None:
        """Append the context tokens ``input_ids`` (b, n), at positions ``[start, start + n)``, to ``cache``;
        ``attention_mask`` (b, start + n) bool covers the whole context so far (``generate()`` step 1.a)."""
        self.check_input(input_ids)
        positions = torch.arange(start, start + input_ids.shape[1], dtype=torch.int32, device=input_ids.device)
        positions = positions.unsqueeze(0)
        encoder = self.model.model.encoder
        dummy = torch.empty((input_ids.shape[0], input_ids.shape[1], 0), dtype=self.model.dtype, device=self.device)
        masks = encoder.create_masks_for_generate(
            config=self.model.config,
            inputs_embeds=dummy,
            attention_mask=attention_mask,
            cache=cache,
            position_ids=positions,
            mm_token_type_ids=None,
        )
        with torch.no_grad():
            encoder(
                input_ids=input_ids.clone(memory_format=torch.contiguous_format),
                attention_mask=masks,
                cache=cache,
                position_ids=positions,
            )

    def denoise(
        self,
        canvas: torch.Tensor,
        self_conditioning: torch.Tensor | None,
        cache: Any,
        attention_mask: torch.Tensor,
        start: int,
        output_hidden_states: bool = False,
    ) -> MDMOutput:
        """One decoder forward (one NFE): the logits (b, C, V), float32 and soft-capped, of the canvas (b, C) at
        positions ``[start, start + C)`` against ``cache``, conditioned on the previous step's (tempered) logits
        ``self_conditioning`` (None at a canvas's first step); ``attention_mask`` (b, start + C) bool over the
        context and the canvas (``generate()`` steps 1.b-1.c.i)."""
        self.check_input(canvas)
        model = self.model
        positions = torch.arange(start, start + canvas.shape[1], dtype=torch.int32, device=canvas.device).unsqueeze(0)
        masks = model.model.decoder.create_diffusion_decoder_attention_mask(
            config=model.config,
            inputs_embeds=canvas.unsqueeze(-1),
            cache=cache,
            decoder_attention_mask=attention_mask,
        )
        with torch.no_grad():
            out = model(
                decoder_input_ids=canvas,
                self_conditioning_logits=self_conditioning,
                decoder_attention_mask=masks,
                cache=cache,
                decoder_position_ids=positions,
                output_hidden_states=output_hidden_states,
            )
        logits = out.logits
        if self.decodable < logits.shape[-1]:  # padded embedding rows: no text the tokenizer could decode
            logits[..., self.decodable :] = float("-inf")
        hidden = self._layer(out.hidden_states) if output_hidden_states else None
        return MDMOutput(logits=logits, hidden_states=hidden)

    @property
    def embedding_dtype(self) -> torch.dtype:
        """The dtype ``generate()`` keeps self-conditioning logits in (the decoder's embeddings')."""
        return self.model.model.decoder.embed_tokens.weight.dtype
