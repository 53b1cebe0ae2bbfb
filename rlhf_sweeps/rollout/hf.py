"""Rollouts with Hugging Face `generate`, sampling from the policy itself."""

from __future__ import annotations

import torch

from rlhf_sweeps.algos.ops import response_mask
from rlhf_sweeps.models import left_pad, special_ids
from rlhf_sweeps.rollout.base import Rollout, Sampling


class HFSampler:
    """Samples with the training model itself, so `sync_weights` is a no-op."""

    def __init__(self, model, sampling: Sampling, batch_size: int = 512):
        self.model = model
        self.sampling = sampling
        self.batch_size = batch_size

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], n: int, seed: int) -> Rollout:
        T = self.sampling.max_new_tokens
        responses, logprobs, masks = [], [], []
        per_call = max(1, self.batch_size // n)
        # fork_rng: sampling must not move the training RNG stream (on a GPU, the one it samples with)
        device = next(self.model.parameters()).device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            for start in range(0, len(prompts), per_call):
                r, lp, m = self._generate_chunk(prompts[start : start + per_call], n, T)
                responses.append(r)
                logprobs.append(lp)
                masks.append(m)
        repeated = [p for p in prompts for _ in range(n)]
        return Rollout(repeated, torch.cat(responses), torch.cat(logprobs), torch.cat(masks))

    def _generate_chunk(self, prompts, n, T):
        pad_id, eos_id = special_ids(self.model)  # from the model's config: real tokenizers differ
        ids, mask = left_pad(prompts, pad_id)
        device = next(self.model.parameters()).device
        ids, mask = ids.to(device), mask.to(device)
        was_training = self.model.training
        self.model.eval()
        out = self.model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=True,
            temperature=self.sampling.temperature,
            # HF defaults to top_k=50: without top_k=0 the samples would not come
            # from the policy, and every log-prob and KL would be wrong.
            top_k=0,
            top_p=self.sampling.top_p,
            max_new_tokens=T,
            num_return_sequences=n,
            pad_token_id=pad_id,
            eos_token_id=eos_id,
            output_scores=True,
            return_dict_in_generate=True,
        )
        self.model.train(was_training)
        resp = out.sequences[:, ids.shape[1] :]  # (N, t<=T)
        # processed scores = logits / temperature (after top-p masking)
        scores = torch.stack(out.scores, dim=1).float()  # (N, t, V)
        lp = torch.log_softmax(scores, dim=-1).gather(-1, resp.unsqueeze(-1)).squeeze(-1)
        # `generate` stops a row only at its first <eos> (or at T) and fills the rest with
        # pad_id: what it sampled is exactly the prefix through the first <eos>. A <pad>
        # the model samples mid-response is a real token with a real log-prob.
        sampled = response_mask(resp, eos_id)  # (N, t)
        lp = torch.where(sampled, lp, torch.zeros_like(lp))
        pad = T - resp.shape[1]
        if pad:
            resp = torch.nn.functional.pad(resp, (0, pad), value=pad_id)
            lp = torch.nn.functional.pad(lp, (0, pad), value=0.0)
            sampled = torch.nn.functional.pad(sampled, (0, pad), value=False)
        return resp.cpu(), lp.cpu(), sampled.cpu()

    def sync_weights(self, model) -> None:
        self.model = model

    def close(self) -> None:
        self.model = None
