"""The ``unmask`` model of lm-evaluation-harness: any text MDM, decoded by any unmasking policy.

    lm_eval --model unmask --model_args model=hf:GSAI-ML/LLaDA-8B-Instruct,trust_remote_code=True,policy=threshold:0.9,gen_length=256,block_length=32 --tasks gsm8k

Registered under the name ``unmask`` twice over: the package's ``lm_eval.models`` entry point (lm-eval
discovers installed entry points when it resolves a model name, lm-eval PR #4013) and ``@register_model`` when
this module is imported (``import unmask.integrations.lm_eval`` before ``lm_eval.simple_evaluate(model="unmask")``;
``unmask lm-eval ARGS`` runs lm-eval's own command line that way, for lm-eval releases without entry points).

- ``generate_until``: requests keep lm-eval's order and are decoded ``batch_size`` at a time with the same
  layout, engine and per-example random streams as ``unmask eval`` on a text task (prompts left-padded, ``gen_length`` masks,
  :func:`unmask.tasks.math.encode_prompts`); the text stops at the first EOS token and then at the first of the
  request's ``until`` strings. ``gen_length`` defaults to the request's ``max_gen_toks``.
- ``loglikelihood``: LLaDA's Monte-Carlo estimate (:func:`unmask.evaluation.likelihood.monte_carlo_log_likelihood`, ``mc_num``
  samples in batches of ``mc_batch_size``, ``cfg_scale``); ``is_greedy`` says whether the continuation is what the
  one-token-per-step confidence decode of its positions writes (LLaDA's lm-eval wrapper's greedy check).
"""

from __future__ import annotations

import inspect
import logging
import sys
from typing import Any

import torch

from unmask.core.extras import require

require("lm_eval", "lm-eval", "the lm-evaluation-harness model")

from lm_eval.api.model import LM  # noqa: E402
from lm_eval.api.registry import register_model  # noqa: E402

from unmask.core.tracking import progress_bar  # noqa: E402
from unmask.engine.config import SamplingConfig  # noqa: E402
from unmask.engine.loop import generate  # noqa: E402
from unmask.engine.streams import ExampleStreams  # noqa: E402
from unmask.evaluation.likelihood import monte_carlo_log_likelihood  # noqa: E402
from unmask.models import MaskedDiffusionModel, load_model  # noqa: E402
from unmask.policies import get_policy  # noqa: E402
from unmask.tasks.math import decode_completions, encode_prompts  # noqa: E402

log = logging.getLogger(__name__)
DEFAULT_GEN_LENGTH = 256  # lm-eval's default max_gen_toks
USED_GEN_KWARGS = ("until", "max_gen_toks")


@register_model("unmask")
class UnmaskLM(LM):
    """An MDM and an unmasking policy behind lm-eval's ``LM`` interface."""

    def __init__(
        self,
        model: str | MaskedDiffusionModel,
        policy: str = "confidence",
        gen_length: int | None = None,
        steps: int | None = None,
        block_length: int | None = None,
        temperature: float = 0.0,
        batch_size: int | str = 8,
        alpha: float | None = None,
        seed: int = 0,
        mc_num: int = 128,
        mc_batch_size: int = 16,
        cfg_scale: float = 0.0,
        check_greedy: bool = True,
        device: str | None = None,
        dtype: str | None = None,
        trust_remote_code: bool | None = None,
        mask_id: int | None = None,
        tokenizer: str | None = None,
        style: str | None = None,
        hidden_layer: int | None = None,
        allow_pickle: bool | None = None,
        revision: str | None = None,
    ) -> None:
        """``model``: ``hf:NAME_OR_PATH`` (or a loaded text MDM); ``policy``: one spec as in ``unmask eval
        --policies``; ``gen_length`` / ``steps`` / ``block_length`` / ``temperature``: LLaDA ``generate()`` names
        (``gen_length`` None: each request's ``max_gen_toks``); ``mc_num`` / ``mc_batch_size`` / ``cfg_scale``:
        LLaDA ``get_log_likelihood``'s ``mc_num`` / ``batch_size`` / ``cfg_scale``; the rest go to
        :func:`unmask.models.load_model`."""
        from unmask.policies.resolve import resolve_policy

        super().__init__()
        options = {
            "device": device,
            "dtype": dtype,
            "trust_remote_code": trust_remote_code,
            "mask_id": mask_id,
            "tokenizer": tokenizer,
            "style": style,
            "hidden_layer": hidden_layer,
            "allow_pickle": allow_pickle,
            "revision": revision,
        }
        if isinstance(model, MaskedDiffusionModel):
            self.mdm = model
        else:
            self.mdm = load_model(str(model), **{k: v for k, v in options.items() if v is not None})
        if getattr(self.mdm, "tokenizer", None) is None:
            raise ValueError(
                f"lm-eval scores text: model {self.mdm.name!r} has no tokenizer; pass model=hf:NAME_OR_PATH"
            )
        self.batch_size = _positive_int(batch_size, "batch_size")
        self.gen_length = None if gen_length is None else _positive_int(gen_length, "gen_length")
        self.sampling = SamplingConfig(steps=steps, block_length=block_length, temperature=float(temperature))
        self.policy = resolve_policy(str(policy), self.mdm, alpha)  # refuses a learned policy that does not fit
        coupled = getattr(getattr(self.policy, "config", None), "coupling_length", 0)
        if coupled and self.gen_length != coupled:
            raise ValueError(
                f"policy {self.policy.name!r} was trained on {coupled} generated positions; pass gen_length={coupled}"
            )
        self.mc_num, self.mc_batch_size, self.cfg_scale = int(mc_num), int(mc_batch_size), float(cfg_scale)
        if self.mc_batch_size < 1 or self.mc_num < self.mc_batch_size or self.mc_num % self.mc_batch_size:
            raise ValueError(f"mc_num ({mc_num}) must be a positive multiple of mc_batch_size ({mc_batch_size})")
        self.check_greedy = bool(check_greedy)
        self.seed = int(seed)
        self.mc_generator = torch.Generator().manual_seed(self.seed)
        self.chat = False  # set once lm-eval renders prompts with the chat template

    # ----- construction from --model_args, with the valid keys listed on a typo -----
    @classmethod
    def valid_args(cls) -> list[str]:
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict[str, Any], additional_config: dict[str, Any] | None = None) -> UnmaskLM:
        args = {**{k: v for k, v in (additional_config or {}).items() if v is not None}, **arg_dict}  # model_args win
        unknown = sorted(set(args) - set(cls.valid_args()))
        if unknown:
            raise ValueError(
                f"unknown --model_args key(s) {', '.join(unknown)} for the unmask model; valid keys: "
                + ", ".join(cls.valid_args())
            )
        if "model" not in args:
            raise ValueError("the unmask model needs model=hf:NAME_OR_PATH in --model_args")
        return cls(**args)

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> UnmaskLM:
        from lm_eval.utils import simple_parse_args_string

        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    # ----- text in, token ids out -----
    @property
    def tokenizer(self) -> Any:
        return self.mdm.tokenizer

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer.name_or_path.replace("/", "__")

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return self.tokenizer.chat_template if chat_template else ""

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        self.chat = True
        return self.tokenizer.apply_chat_template(
            chat_history,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
            continue_final_message=not add_generation_prompt,
        )

    def encode(self, text: str) -> list[int]:
        """Prompt ids: with the tokenizer's special tokens, except for chat-rendered prompts (they hold them)."""
        return self.tokenizer(text, add_special_tokens=not self.chat)["input_ids"]

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """(context ids, continuation ids) split from the ids of the whole text, trailing spaces of the context
        moved to the continuation (lm-eval HFLM / LLaDA ``_encode_pair``); the context starts with BOS if the
        tokenizer has one."""
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        whole = self.tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
        head = self.tokenizer(context, add_special_tokens=False)["input_ids"]
        bos = [] if self.tokenizer.bos_token_id is None or self.chat else [self.tokenizer.bos_token_id]
        return bos + whole[: len(head)], whole[len(head) :]

    # ----- lm-eval requests -----
    def generate_until(self, requests: list, disable_tqdm: bool = False) -> list[str]:
        groups: dict[str, list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault(repr(sorted(request.args[1].items())), []).append(i)
        out: list[str] = [""] * len(requests)
        bar = progress_bar(total=len(requests), desc="unmask generate_until", disable=disable_tqdm or self.rank != 0)
        for indices in groups.values():
            kwargs = dict(requests[indices[0]].args[1])
            ignored = sorted(set(kwargs) - set(USED_GEN_KWARGS))
            if ignored:
                log.warning(
                    "unmask: gen_kwargs %s are not used; decoding follows --model_args (policy, temperature, ...)",
                    ", ".join(ignored),
                )
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            gen_length = self.gen_length or _positive_int(
                kwargs.get("max_gen_toks", DEFAULT_GEN_LENGTH), "max_gen_toks"
            )
            for s in range(0, len(indices), self.batch_size):
                chunk = indices[s : s + self.batch_size]
                contexts = [requests[i].args[0] for i in chunk]
                ids = [requests[i].doc_id for i in chunk]
                for i, context, text in zip(chunk, contexts, self.generate_texts(contexts, gen_length, until, ids)):
                    out[i] = text
                    self.cache_hook.add_partial("generate_until", (context, requests[i].args[1]), text)
                bar.update(len(chunk))
        bar.close()
        return out

    def generate_texts(
        self, contexts: list[str], gen_length: int, until: list[str], example_ids: list[int]
    ) -> list[str]:
        """One batch: the policy's completions, cut at EOS and then at the first ``until`` string. Example ``j``
        (lm-eval's ``doc_id``) draws from the stream ``(seed, j)``, as example ``j`` of ``unmask eval`` does."""
        enc = encode_prompts([self.encode(c) for c in contexts], self.mdm, gen_length, "lm-eval")
        streams = ExampleStreams(self.seed, example_ids, device=self.mdm.device)
        result = generate(
            self.mdm, enc.input_ids, self.policy, self.sampling, enc.attention_mask, enc.gen_start, streams
        )
        texts = decode_completions(result.sequences, self.mdm, gen_length)
        return [min((t.split(u)[0] for u in until if u), key=len, default=t) for t in texts]

    def loglikelihood(self, requests: list, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        out = []
        for request in progress_bar(requests, desc="unmask loglikelihood", disable=disable_tqdm or self.rank != 0):
            context, continuation = request.args
            prompt, answer = self.encode_pair(context, continuation)
            ll = monte_carlo_log_likelihood(
                self.mdm, prompt, answer, self.mc_num, self.mc_batch_size, self.cfg_scale, self.mc_generator
            )
            greedy = self.check_greedy and self.greedy_answer(prompt, len(answer)) == answer
            out.append((ll, bool(greedy)))
            self.cache_hook.add_partial("loglikelihood", request.args, out[-1])
        return out

    def greedy_answer(self, prompt: list[int], length: int) -> list[int]:
        """The ``length`` tokens after ``prompt`` as the confidence policy writes them, one per step."""
        ids = torch.tensor([prompt + [self.mdm.mask_id] * length], device=self.mdm.device)
        result = generate(self.mdm, ids, get_policy("confidence"), SamplingConfig(), gen_start=len(prompt))
        return result.sequences[0, len(prompt) :].tolist()

    def loglikelihood_rolling(self, requests: list, disable_tqdm: bool = False) -> list[float]:
        raise ValueError(
            "the unmask model scores answers given a prompt (loglikelihood, generate_until); rolling "
            "perplexity tasks (wikitext, ...) are not supported for masked diffusion models"
        )


def _positive_int(value: Any, name: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be a positive integer, got {value!r} (the unmask model has no 'auto' batch size)"
        ) from None
    if number < 1 or number != float(value):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return number


def run_lm_eval(argv: list[str]) -> int:
    """lm-eval's command line (``lm_eval ARGS``) in this process, with the ``unmask`` model registered; without
    ``--device`` the model runs on unmask's default device (cuda when PyTorch sees a GPU, else cpu) instead of
    lm-eval's ``cuda:0``."""
    from lm_eval.__main__ import cli_evaluate

    argv = argv[argv[:1] == ["--"] :]
    if not any(a == "--device" or a.startswith("--device=") for a in argv):
        argv = [*argv, "--device", "cuda" if torch.cuda.is_available() else "cpu"]
    saved, sys.argv = sys.argv, ["lm_eval", *argv]
    try:
        cli_evaluate()
    finally:
        sys.argv = saved
    return 0
