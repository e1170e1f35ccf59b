"""Conformance grid: unmask's engine against the upstream sampling loops, token for token and forward for forward.

The upstream functions are imported from ``../shared/reference`` (verbatim copies; the suite skips when the
folder is absent): LLaDA ``generate()`` (llada/generate.py), Fast-dLLM ``generate()`` with ``threshold``
(fast_dllm/llada/generate.py; its factor rule ``get_transfer_index_dynamic`` is not in that copy and is
transcribed below from NVlabs/Fast-dLLM llada/generate.py), and Dream ``diffusion_generate()``
(fast_dllm/dream/model/generation_utils.py, ``DreamGenerationMixin``).

Both sides run the same tiny random network (:class:`OracleNet`). It honours padding by itself (pad tokens
are never attended to and do not advance positions) and computes each row on its own, so its logits for a row
do not depend on the batch the row sits in; upstream LLaDA calls ``model(x).logits``, Dream
``model(x, attention_mask, tok_idx).logits`` with logits[:, i] predicting token i + 1 (Dream shifts them itself;
the unmask side sees the backend-aligned logits of a ``logit_shift = 1`` model). Random draws are aligned by
seeding torch's global generator before each side (unmask: ``generator=None``, one shared stream).

Used by tests/test_conformance.py and benchmarks/conformance.py (settings matched / settings run).
"""

from __future__ import annotations

import contextlib
import io
import itertools
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from llada_reference import REFERENCE, load_reference

from unmask.engine.config import SamplingConfig
from unmask.engine.loop import generate
from unmask.models.base import MaskedDiffusionModel, MDMOutput
from unmask.policies import get_policy

VOCAB, MASK, PAD, EOS, EOT = 24, 23, 0, 1, 2


class OracleNet(torch.nn.Module):
    """A one-layer bidirectional attention network with random weights; raw logits (B, L, V) where position i
    predicts token i + ``shift``. ``mask_bias`` is added to the mask token's logit (very negative: the network
    never predicts [MASK], so upstream's loops always end); ``sharpness`` scales the logits."""

    def __init__(
        self, seed: int = 0, d: int = 16, shift: int = 0, mask_bias: float = 0.0, sharpness: float = 3.0
    ) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.emb = torch.nn.Parameter(torch.randn(VOCAB, d, generator=g))
        self.pos = torch.nn.Parameter(torch.randn(128, d, generator=g) * 0.5)
        self.wq, self.wk, self.wv = (torch.nn.Parameter(torch.randn(d, d, generator=g) / d**0.5) for _ in range(3))
        self.head = torch.nn.Parameter(torch.randn(d, VOCAB, generator=g) * sharpness / d**0.5)
        self.requires_grad_(False)
        self.shift, self.mask_bias = shift, mask_bias
        self.calls = 0
        self.device = torch.device("cpu")

    def row(self, ids: torch.Tensor) -> torch.Tensor:
        real = ids != PAD
        pos = (real.long().cumsum(0) - 1).clamp(min=0)
        h = self.emb[ids] + self.pos[pos]
        scores = (h @ self.wq) @ (h @ self.wk).T / h.shape[1] ** 0.5
        h = h + scores.masked_fill(~real[None, :], float("-inf")).softmax(-1) @ (h @ self.wv)
        logits = torch.tanh(h) @ self.head
        logits[:, MASK] += self.mask_bias
        return logits

    def raw(self, input_ids: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return torch.stack([self.row(r) for r in input_ids])

    def forward(self, input_ids, attention_mask=None, tok_idx=None, **_):  # the upstream call signatures
        return types.SimpleNamespace(logits=self.raw(input_ids))


class OracleMDM(MaskedDiffusionModel):
    """The same network behind unmask's MDM interface (Dream: logits realigned, as the native backend does)."""

    def __init__(self, net: OracleNet) -> None:
        super().__init__()
        self.net, self.mask_id, self.vocab_size, self.hidden_size = net, MASK, VOCAB, 16
        self.name, self.logit_shift = "oracle", net.shift
        self.eos_token_id, self.eot_token_id = EOS, EOT

    def forward(self, input_ids, attention_mask=None, output_hidden_states=False):
        logits = self.net.raw(input_ids)
        if self.logit_shift:
            logits = torch.cat([logits[:, :1], logits[:, :-1]], 1)
        return MDMOutput(logits=logits)


def reference_available() -> bool:
    return REFERENCE.is_dir()


def llada_reference() -> types.ModuleType:
    return load_reference("_conformance_llada_generate", REFERENCE / "llada" / "generate.py")


def fast_dllm_reference() -> types.ModuleType:
    stub = types.ModuleType("model.modeling_llada")
    stub.LLaDAModelLM = object  # imported by the script for its main(); unused by generate()
    package = types.ModuleType("model")
    package.modeling_llada = stub
    return load_reference(
        "_conformance_fast_dllm_generate",
        REFERENCE / "fast_dllm" / "llada" / "generate.py",
        {"model": package, "model.modeling_llada": stub},
    )


def dream_reference() -> types.ModuleType:
    """Dream's generation code; one compatibility patch for the pinned transformers 5: GenerationConfig.update()
    now calls ``validate(user_set_attributes=...)``, which Dream's no-op ``validate(is_init)`` does not take."""
    module = load_reference(
        "_conformance_dream_generation", REFERENCE / "fast_dllm" / "dream" / "model" / "generation_utils.py"
    )
    module.DreamGenerationConfig.validate = lambda self, *args, **kwargs: None
    return module


def get_transfer_index_dynamic(module, logits, temperature, remasking, mask_index, x, num_transfer_tokens, factor=1):
    """Fast-dLLM's factor rule, transcribed from NVlabs/Fast-dLLM llada/generate.py (not in the shared copy);
    its noise and confidences come from the shared module's own helpers."""
    logits_with_noise = module.add_gumbel_noise(logits, temperature=temperature)
    x0 = torch.argmax(logits_with_noise, dim=-1)
    if remasking == "low_confidence":
        p = F.softmax(logits.to(torch.float64), dim=-1)
        x0_p = torch.squeeze(torch.gather(p, dim=-1, index=torch.unsqueeze(x0, -1)), -1)
    else:
        x0_p = torch.rand((x0.shape[0], x0.shape[1]), device=x0.device)
    x0 = torch.where(mask_index, x0, x)
    confidence = torch.where(mask_index, x0_p, -np.inf)
    transfer_index = torch.zeros_like(x0, dtype=torch.bool, device=x0.device)
    num_transfer_tokens = mask_index.sum(dim=1, keepdim=True)
    for j in range(confidence.shape[0]):
        ns = list(range(1, num_transfer_tokens[j] + 1))
        threshs = [1 - factor / (n + 1) for n in ns]
        threshs[0] = -1
        sorted_confidence = torch.sort(confidence[j][mask_index[j]], dim=-1, descending=True)[0]
        for top_i in range(len(threshs)):
            if sorted_confidence[top_i] < threshs[top_i]:
                break
        if top_i == 0 or top_i == len(threshs) - 1:
            top_i += 1
        _, select_index = torch.topk(confidence[j], k=top_i)
        transfer_index[j, select_index] = True
    return x0, transfer_index


def prompts(batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` prompts of different lengths, left-padded with PAD: (ids, attention mask)."""
    g = torch.Generator().manual_seed(seed)
    lengths = [5, 3, 4][:batch]
    width = max(lengths)
    ids = torch.full((batch, width), PAD, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, width - n :] = torch.randint(3, MASK, (n,), generator=g)
    return ids, (ids != PAD).long()


@dataclass
class Case:
    reference: str  # "llada" | "fast_dllm" | "dream"
    gen_length: int
    steps: int
    block_length: int
    temperature: float
    batch: int
    strategy: str  # LLaDA remasking, Fast-dLLM rule ("threshold:T" / "factor:F"), Dream alg
    cfg_scale: float = 0.0
    alg_temp: float | None = None
    options: dict = field(default_factory=dict)  # LLaDA eos options, Dream top_p / top_k
    seed: int = 0

    @property
    def name(self) -> str:
        extra = "".join(f"-{k}={v}" for k, v in self.options.items())
        return (
            f"{self.reference}-G{self.gen_length}-s{self.steps}-b{self.block_length}-T{self.temperature:g}-B{self.batch}"
            f"-{self.strategy}"
            + (f"-cfg{self.cfg_scale:g}" if self.cfg_scale else "")
            + (f"-algtemp{self.alg_temp:g}" if self.alg_temp else "")
            + extra
        )


LLADA_POLICY = {"low_confidence": "confidence", "random": "random"}
DREAM_POLICY = {"maskgit_plus": "confidence", "topk_margin": "margin", "entropy": "entropy", "origin": "origin"}


def grid(reference: str) -> list[Case]:
    """The settings run for ``reference``: gen_length 16/32, steps G, G/2, G/4, block G and 8 (LLaDA style),
    temperature 0 and 0.7, batch 1 and 3 (left-padded), every remasking / alg value, cfg on and off."""
    cases = []
    for G, div, T, B in itertools.product((16, 32), (1, 2, 4), (0.0, 0.7), (1, 3)):
        steps = G // div
        if reference == "llada":
            for block, remasking, cfg in itertools.product((G, 8), LLADA_POLICY, (0.0, 1.5)):
                cases.append(Case("llada", G, steps, block, T, B, remasking, cfg))
        elif reference == "fast_dllm":
            for block, rule in itertools.product((G, 8), ("threshold:0.5", "factor:1.5")):
                cases.append(Case("fast_dllm", G, steps, block, T, B, rule))
        else:
            for alg, alg_temp in [
                ("origin", None),
                *itertools.product(("maskgit_plus", "topk_margin", "entropy"), (None, 0.5)),
            ]:
                cases.append(Case("dream", G, steps, G, T, B, alg, alg_temp=alg_temp))
    if reference == "llada":
        for T, options in itertools.product((0.0, 0.7), ({"logits_eos_inf": True}, {"confidence_eos_eot_inf": True})):
            cases.append(Case("llada", 16, 8, 8, T, 3, "low_confidence", options=options))
    if reference == "dream":
        for options in ({"top_p": 0.8}, {"top_k": 5}, {"top_p": 0.9, "top_k": 8}):
            cases.append(Case("dream", 16, 8, 16, 0.7, 3, "maskgit_plus", options=options))
    return cases


def network_for(case: Case) -> OracleNet:
    # Fast-dLLM's loop cannot end while the network predicts [MASK]; Dream counts masks as a batch average,
    # which equals unmask's per-row count only while every row reveals real tokens (equal masks per row).
    never_mask = case.reference == "fast_dllm" or (case.reference == "dream" and case.batch > 1)
    return OracleNet(seed=case.seed, shift=1 if case.reference == "dream" else 0, mask_bias=-1e4 if never_mask else 3.0)


def run_reference(case: Case, net: OracleNet, ids: torch.Tensor, attn: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """Upstream's sequences and per-row forward counts for ``case``."""
    G = case.gen_length
    net.calls = 0
    torch.manual_seed(case.seed)
    if case.reference == "llada":
        module = llada_reference()
        eos = dict(case.options)
        x = _with_ids(
            module,
            eos,
            lambda: module.generate(
                net,
                ids,
                attn,
                steps=case.steps,
                gen_length=G,
                block_length=case.block_length,
                temperature=case.temperature,
                cfg_scale=case.cfg_scale,
                remasking=case.strategy,
                mask_id=MASK,
                **eos,
            ),
        )
        return x, [net.calls * (2 if case.cfg_scale else 1)] * len(ids)
    if case.reference == "fast_dllm":
        module = fast_dllm_reference()
        rule, value = case.strategy.split(":")
        rows, nfes = [], []
        for r in range(len(ids)):  # upstream decodes one prompt at a time
            torch.manual_seed(case.seed + r)
            prompt = ids[r : r + 1]
            if rule == "threshold":
                x, nfe = module.generate(
                    net,
                    prompt,
                    steps=case.steps,
                    gen_length=G,
                    block_length=case.block_length,
                    temperature=case.temperature,
                    remasking="low_confidence",
                    mask_id=MASK,
                    threshold=float(value),
                )
            else:
                original = module.get_transfer_index
                module.get_transfer_index = lambda logits, t, rem, mi, x, n, thr: get_transfer_index_dynamic(
                    module, logits, t, rem, mi, x, None, float(value)
                )
                try:
                    x, nfe = module.generate(
                        net,
                        prompt,
                        steps=case.steps,
                        gen_length=G,
                        block_length=case.block_length,
                        temperature=case.temperature,
                        remasking="low_confidence",
                        mask_id=MASK,
                        threshold=0.0,
                    )
                finally:
                    module.get_transfer_index = original
            rows.append(x[0])
            nfes.append(nfe)
        return torch.stack(rows), nfes
    module = dream_reference()
    dream = _dream_model(module, net)
    config = module.DreamGenerationConfig(
        temperature=case.temperature,
        top_p=case.options.get("top_p"),
        top_k=case.options.get("top_k"),
        max_new_tokens=G,
        steps=case.steps,
        eps=1e-3,
        alg=case.strategy,
        alg_temp=case.alg_temp,
        mask_token_id=MASK,
        pad_token_id=PAD,
        bos_token_id=3,
        eos_token_id=EOS,
    )
    with contextlib.redirect_stdout(io.StringIO()):
        x = dream.diffusion_generate(ids, generation_config=config, attention_mask=attn)
    return x, [net.calls] * len(ids)


def _with_ids(module, options: dict, call):
    """LLaDA's generate() hard-codes EOS 126081 and EOT 126348; run it with the tiny vocabulary's ids."""
    if not options:
        return call()
    source = Path(module.__file__).read_text().replace("126081", str(EOS)).replace("126348", str(EOT))
    patched = types.ModuleType("_conformance_llada_generate_small_ids")
    exec(compile(source, module.__file__, "exec"), patched.__dict__)
    original, module.generate = module.generate, patched.generate
    try:
        return call()
    finally:
        module.generate = original


def _dream_model(module, net: OracleNet):
    class DreamOracle(module.DreamGenerationMixin):
        def __init__(self) -> None:
            self.net, self.device = net, torch.device("cpu")
            self.config = types.SimpleNamespace(max_position_embeddings=128)
            self.generation_config = module.DreamGenerationConfig(
                mask_token_id=MASK, pad_token_id=PAD, eos_token_id=EOS
            )

        def __call__(self, x, attention_mask=None, tok_idx=None):
            return self.net(x, attention_mask, tok_idx)

    return DreamOracle()


def run_unmask(case: Case, net: OracleNet, ids: torch.Tensor, attn: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """unmask's sequences and per-row NFE for ``case`` (bit-exact mode: suppress_mask_token off)."""
    G = case.gen_length
    model = OracleMDM(net)
    x = torch.cat([ids, torch.full((len(ids), G), MASK, dtype=torch.long)], 1)
    am = torch.cat([attn, torch.ones(len(ids), G, dtype=torch.long)], 1)
    if case.reference == "llada":
        policy = get_policy(LLADA_POLICY[case.strategy])
        config = SamplingConfig(
            steps=case.steps,
            block_length=case.block_length,
            temperature=case.temperature,
            cfg_scale=case.cfg_scale,
            sampler="llada",
            suppress_mask_token=False,
            **case.options,
        )
    elif case.reference == "fast_dllm":
        policy = get_policy(case.strategy)
        config = SamplingConfig(
            steps=case.steps,
            block_length=case.block_length,
            temperature=case.temperature,
            sampler="llada",
            suppress_mask_token=False,
        )
    else:
        spec = DREAM_POLICY[case.strategy] + (f":alg_temp={case.alg_temp}" if case.alg_temp else "")
        policy = get_policy(spec)
        config = SamplingConfig(
            steps=case.steps,
            temperature=case.temperature,
            sampler="dream",
            eps=1e-3,
            suppress_mask_token=False,
            **case.options,
        )
    if case.reference == "fast_dllm":  # rows decoded together; each row's draws aligned with its own upstream run
        outs = []
        for r in range(len(ids)):
            torch.manual_seed(case.seed + r)
            outs.append(generate(model, x[r : r + 1], policy, config, am[r : r + 1], gen_start=ids.shape[1]))
        return torch.cat([o.sequences for o in outs]), [int(o.nfe[0]) for o in outs]
    torch.manual_seed(case.seed)
    out = generate(model, x, policy, config, am, gen_start=ids.shape[1])
    return out.sequences, out.nfe.tolist()


def check(case: Case) -> tuple[bool, str]:
    """(matched, detail): tokens and per-row forward counts of unmask and upstream on ``case``."""
    ids, attn = prompts(case.batch, case.seed)
    net = network_for(case)
    ref_x, ref_nfe = run_reference(case, net, ids, attn)
    x, nfe = run_unmask(case, net, ids, attn)
    same = torch.equal(ref_x, x) and ref_nfe == nfe
    return (
        same,
        "" if same else f"nfe {nfe} vs upstream {ref_nfe}; tokens differ at {(ref_x != x).nonzero().tolist()[:6]}",
    )


def batched_fast_dllm_matches(case: Case) -> tuple[bool, str]:
    """Fast-dLLM decodes one prompt at a time; unmask decodes the rows of a padded batch together, each leaving
    the batch when done. At temperature 0 each row must equal its own upstream run, forwards included."""
    ids, attn = prompts(case.batch, case.seed)
    net = network_for(case)
    ref_x, ref_nfe = run_reference(case, net, ids, attn)
    G = case.gen_length
    x = torch.cat([ids, torch.full((len(ids), G), MASK, dtype=torch.long)], 1)
    am = torch.cat([attn, torch.ones(len(ids), G, dtype=torch.long)], 1)
    config = SamplingConfig(
        steps=case.steps, block_length=case.block_length, sampler="llada", suppress_mask_token=False
    )
    out = generate(OracleMDM(net), x, get_policy(case.strategy), config, am, gen_start=ids.shape[1])
    same = torch.equal(out.sequences, ref_x) and out.nfe.tolist() == ref_nfe
    return same, "" if same else f"nfe {out.nfe.tolist()} vs upstream {ref_nfe}"
