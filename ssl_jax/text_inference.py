"""Inference with the language objectives' networks (trained here or published): filling in
[MASK] tokens with BERT and sampling continuations from GPT. Pure functions of a network and its parameters, for command
lines and notebooks; token ids in, token ids out (the tokenizer stays with the caller).
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.data.tokenizer import MASK_ID, PAD_ID, SEP_ID
from ssl_jax.methods.mlm import NUM_SPECIAL


@functools.partial(jax.jit, static_argnames=("network", "k", "excluded"))
def _top_k_candidates(network: nn.Module, params, tokens, attention_mask, segment_ids, k: int,
                      excluded: tuple[int, ...]):
  """Softmax over the vocabulary at every position [B, L, vocab], then the k most probable
  ids not in `excluded` and their probabilities at each position."""
  output = network.apply({"params": params}, tokens, segment_ids, attention_mask)
  if isinstance(output, tuple):  # the pre-training network's (output, next-sentence logits)
    output = output[0]
  probs = jax.nn.softmax(output.logits, axis=-1)
  is_excluded = jnp.isin(jnp.arange(probs.shape[-1]), jnp.asarray(excluded, jnp.int32))
  top_probs, top_ids = jax.lax.top_k(jnp.where(is_excluded, -1.0, probs), k)
  return top_ids, top_probs


def top_k_fill(network: nn.Module, params, tokens, attention_mask, segment_ids, k: int,
               mask_id: int = MASK_ID, excluded: tuple[int, ...] = tuple(range(NUM_SPECIAL))
               ) -> tuple[np.ndarray, np.ndarray]:
  """The k most probable fillers of each [MASK] token under BERT's masked-LM head (Devlin et
  al. 2019, Sec. 3.1), as a cloze test shows what pre-training taught the model.

  `network` is `mlm.network(config)` or a published `transformer.Encoder` with its masked-LM
  head; tokens, attention_mask, segment_ids are int [B, L] (or [L] for one text) as in a
  training batch, `mask_id` the tokenizer's mask token. Probabilities are the softmax over the
  whole vocabulary at that position; `excluded` ids are never proposed (the vocabulary's
  special tokens; () proposes every id, as Hugging Face's fill-mask pipeline does).

  Returns (ids [n_masks, k], probs [n_masks, k]), most probable first, one row per [MASK] in
  row-major order.
  """
  tokens, attention_mask, segment_ids = (np.atleast_2d(np.asarray(a, np.int32))
                                         for a in (tokens, attention_mask, segment_ids))
  excluded = tuple(int(i) for i in excluded)
  candidates = _vocab_size(params.get("encoder", params)) - len(excluded)
  if not 1 <= k <= candidates:
    raise ValueError(f"k must be between 1 and the {candidates} candidate tokens, got {k}")
  ids, probs = _top_k_candidates(network, params, tokens, attention_mask, segment_ids, k,
                                 excluded)
  at_masks = np.asarray(tokens == mask_id)
  return np.asarray(ids)[at_masks], np.asarray(probs)[at_masks]


def _vocab_size(params) -> int:
  """The vocabulary size of a text transformer's parameters: rows of its token table."""
  return params["embeddings"]["token_embed"]["embedding"].shape[0]


def _max_length(params) -> int:
  """The decoder's context length: rows of its learned position table."""
  return params["embeddings"]["position_embed"].shape[0]


@functools.partial(jax.jit, static_argnames=("network", "greedy", "top_k"))
def _next_token(network: nn.Module, params, buffer, length, rng, temperature, greedy: bool,
                top_k: int):
  """The token that follows the first `length` tokens of `buffer` [max_length].

  The buffer has a fixed shape, so one compilation serves every step; positions >= length are
  padding, hidden by the attention mask (and by the causal mask from position length - 1).
  """
  attention_mask = (jnp.arange(buffer.shape[0]) < length).astype(jnp.int32)
  logits = network.apply({"params": params}, buffer[None], attention_mask[None]).logits[0]
  logits = logits[length - 1]
  if greedy:
    return jnp.argmax(logits)
  if top_k:
    kth_largest = jax.lax.top_k(logits, top_k)[0][-1]
    logits = jnp.where(logits < kth_largest, -jnp.inf, logits)
  return jax.random.categorical(rng, logits / temperature)


def sample(network: nn.Module, params, prompt_ids, rng: jax.Array, max_new_tokens: int,
           temperature: float = 1.0, top_k: int = 0, stop_id: int = SEP_ID) -> np.ndarray:
  """Autoregressive sampling from GPT (Radford et al. 2019, Sec. 3, with top-k truncation as in
  its samples, Sec. 3.7): each step draws the next token from softmax(logits / temperature),
  restricted to the `top_k` most probable tokens when top_k > 0; temperature 0 is greedy
  decoding (argmax).

  `network` is `causal_lm.network(config)`; `prompt_ids` is 1-D (a text starts with [CLS]).
  The whole prefix is re-encoded each step (no key/value cache): slower than incremental
  decoding, but it is the training forward pass exactly, compiled once for the model's
  `max_length`. Sampling stops after `stop_id` ([SEP], end of text), after `max_new_tokens`, or
  when the sequence fills the model's context, whichever comes first; the same rng gives the
  same tokens.

  Returns the prompt followed by the new tokens (int32 [n]), the stop token included when drawn.
  """
  prompt = np.asarray(prompt_ids, np.int32).reshape(-1)
  max_length = _max_length(params)
  if not 1 <= len(prompt) <= max_length:
    raise ValueError(f"prompt length must be between 1 and {max_length}, got {len(prompt)}")
  if temperature < 0 or top_k < 0:
    raise ValueError(f"temperature and top_k must be non-negative, got {temperature}, {top_k}")
  buffer = np.full((max_length,), PAD_ID, np.int32)
  buffer[:len(prompt)] = prompt
  length = len(prompt)
  greedy = temperature == 0
  for step in range(max_new_tokens):
    if length >= max_length:
      break
    token = int(_next_token(network, params, jnp.asarray(buffer), length,
                            jax.random.fold_in(rng, step), temperature if not greedy else 1.0,
                            greedy, int(top_k)))
    buffer[length] = token
    length += 1
    if token == stop_id:
      break
  return buffer[:length].copy()
