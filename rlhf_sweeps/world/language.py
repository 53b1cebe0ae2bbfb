"""A seeded hidden language and its gold reward (docs/science.md §5).

The language is a sparse first-order Markov chain over `n_words` made-up
words. Each word has a handful of successors with Dirichlet weights and a
stop probability. A prompt is a short walk on the chain; the ideal response
continues the walk until the chain stops.

Gold reward of a response (never part of the training signal):

    gold = sum_t value[w_t] / max(len, min_content_len)
           + fluency_weight * (mean_t log p_chain(w_t | w_{t-1}) - fluency_baseline)

* content: every word has a hidden value ~ N(0, 1); the proxy can learn which
  words are valuable from preference pairs.
* fluency: per-token log-likelihood under the *true* chain, smoothed with
  `eps` so an off-chain transition costs about log(eps / n_words) ~ -12 nats.
  A small proxy trained on on-policy pairs barely sees off-chain text, so it
  is nearly blind to this term far from the SFT distribution. That is the
  exploitable region: over-optimization is possible, not built in.

Token ids: 0 <pad>, 1 <bos>, 2 <eos>, 3 <sep>, then words at 4 + word index.
A response is scored exactly as sampled: it ends at its first <eos> or at the
length limit, and every other special token inside it (<pad>, <bos>, <sep>)
is junk: value `junk_value` and the smoothed off-chain log-likelihood, for
itself and for the word after it (which has no on-chain predecessor). Callers
pass each response's sampled tokens only (`Rollout.response_lists`), never
the sampler's padding.
"""

from __future__ import annotations

import math

import numpy as np

from rlhf_sweeps.config import WorldConfig

PAD_ID, BOS_ID, EOS_ID, SEP_ID = 0, 1, 2, 3
N_SPECIAL = 4
SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<sep>")
SPECIAL_IDS = {"bos_id": BOS_ID, "eos_id": EOS_ID, "pad_id": PAD_ID}  # what a new model of this world is built with


def word_token(i: int) -> str:
    return f"w{i:03d}"


class HiddenLanguage:
    """The hidden chain; sampling and gold scoring work on token-id lists."""

    def __init__(self, params: WorldConfig):
        self.params = p = params
        rng = np.random.default_rng(p.seed)
        V = p.n_words
        self.transitions = np.zeros((V, V))  # (V, V) row-stochastic, sparse support
        for w in range(V):
            n_succ = rng.integers(p.min_successors, p.max_successors + 1)
            succ = rng.choice(V, size=n_succ, replace=False)
            self.transitions[w, succ] = rng.dirichlet(np.full(n_succ, p.dirichlet_alpha))
        self.start = rng.dirichlet(np.ones(V))  # (V,)
        self.stop = rng.beta(p.stop_beta_a, p.stop_beta_b, size=V)  # (V,)
        self.values = rng.normal(size=V)  # (V,) hidden content value of each word
        smoothed = (1 - p.eps) * self.transitions + p.eps / V
        # log p(next word | prev) including "did not stop"; and log p(stop | prev)
        self.log_next = np.log(smoothed) + np.log1p(-self.stop)[:, None]  # (V, V)
        self.log_stop = np.log(self.stop)  # (V,)
        self.junk_logp = math.log(p.eps / V)
        self.fluency_baseline = 0.0
        self.fluency_baseline = self._estimate_fluency_baseline(rng)

    # ------------------------------------------------------------------ sizes
    @property
    def vocab_size(self) -> int:
        return N_SPECIAL + self.params.n_words

    # --------------------------------------------------------------- sampling
    def _walk(self, rng: np.random.Generator, first_prev: int | None, n_max: int, can_stop: bool):
        words, prev = [], first_prev
        for _ in range(n_max):
            if prev is not None and can_stop and rng.random() < self.stop[prev]:
                return words, True
            probs = self.start if prev is None else self.transitions[prev]
            prev = int(rng.choice(self.params.n_words, p=probs))
            words.append(prev)
        return words, False

    def sample_prompt(self, rng: np.random.Generator) -> list[int]:
        """Prompt token ids `<bos> w.. <sep>`."""
        p = self.params
        n = int(rng.integers(p.min_prompt_words, p.max_prompt_words + 1))
        words, _ = self._walk(rng, None, n, can_stop=False)
        return [BOS_ID] + [N_SPECIAL + w for w in words] + [SEP_ID]

    def sample_response(self, rng: np.random.Generator, prompt: list[int]) -> list[int]:
        """The chain's own continuation: word ids, then <eos> if it stopped in time."""
        prev = prompt[-2] - N_SPECIAL  # last prompt word (before <sep>)
        words, stopped = self._walk(rng, prev, self.params.max_response_words, can_stop=True)
        # the chain may also stop right after the last allowed word
        return [N_SPECIAL + w for w in words] + ([EOS_ID] if stopped else [])

    def sample_prompts(self, rng: np.random.Generator, n: int) -> list[list[int]]:
        return [self.sample_prompt(rng) for _ in range(n)]

    # ------------------------------------------------------------------- gold
    def _score_one(self, prompt: list[int], response: list[int]) -> tuple[float, float]:
        """(content, mean log-likelihood) of one response, as sampled: anything
        after its first <eos> is ignored; a special token before it is junk."""
        prev = prompt[-2] - N_SPECIAL
        total_value, total_logp, n_words, n_events = 0.0, 0.0, 0, 0
        for tok in response:
            if tok == EOS_ID:
                total_logp += self.log_stop[prev] if prev is not None else self.junk_logp
                n_events += 1
                break
            n_words += 1
            n_events += 1
            if tok < N_SPECIAL:  # special token mid-response: junk
                total_value += self.params.junk_value
                total_logp += self.junk_logp
                prev = None
                continue
            w = tok - N_SPECIAL
            total_logp += self.log_next[prev, w] if prev is not None else self.junk_logp
            total_value += self.values[w]
            prev = w
        content = total_value / max(n_words, self.params.min_content_len)
        mean_logp = total_logp / max(n_events, 1)
        return content, mean_logp

    def gold_parts(self, prompts: list[list[int]], responses: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Raw gold's two parts per pair: (content, fluency), gold = content + fluency."""
        content, fluency = np.empty(len(responses)), np.empty(len(responses))
        for i, (prompt, response) in enumerate(zip(prompts, responses)):
            content[i], mean_logp = self._score_one(prompt, response)
            fluency[i] = self.params.fluency_weight * (mean_logp - self.fluency_baseline)
        return content, fluency

    def gold_reward(self, prompts: list[list[int]], responses: list[list[int]]) -> np.ndarray:
        """Raw (un-normalized) gold reward per (prompt, response) pair."""
        content, fluency = self.gold_parts(prompts, responses)
        return content + fluency

    def _estimate_fluency_baseline(self, rng: np.random.Generator, n: int = 2000) -> float:
        logps = []
        for _ in range(n):
            prompt = self.sample_prompt(rng)
            _, mean_logp = self._score_one(prompt, self.sample_response(rng, prompt))
            logps.append(mean_logp)
        return float(np.mean(logps))

    def entropy_rate(self) -> float:
        """Stationary entropy per event (next word or stop) of the true chain,
        in nats: what a perfect SFT model's per-token loss approaches."""
        p_next = np.exp(self.log_next)  # (V, V), rows sum to 1 - stop
        h = -(p_next * self.log_next).sum(1) - self.stop * self.log_stop  # (V,)
        # stationary distribution of the (non-stopping) word chain
        evals, evecs = np.linalg.eig(self.transitions.T)
        pi = np.real(evecs[:, np.argmin(np.abs(evals - 1))])
        pi = pi / pi.sum()
        return float(pi @ h)
