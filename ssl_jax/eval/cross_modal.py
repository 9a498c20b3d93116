"""Zero-shot classification and image <-> text retrieval from a joint image–text embedding (and
the same retrieval between any two kinds of input embedded in one space: a clip and its sound).

For any model that embeds images and texts in one space as unit vectors (CLIP, Radford et al.
2021), on any embedding matrices:

- `zero_shot_classifier`: each class's text embedding, averaged over prompt templates
  ("a photo of a {}.") and renormalised (the paper's prompt ensembling "in embedding space",
  Sec. 3.1.4); `zero_shot_predict` takes the class of highest cosine similarity.
- `retrieval_recall`: Recall@K both ways, as in the paper's Flickr30k / MSCOCO evaluation
  (Sec. 3.1.5, Table 13): image -> text counts an image as found when any of its captions is
  among the K texts most similar to it; text -> image counts a caption when its image is among
  the K images most similar to it. The rank of the true item is the number of wrong items at
  least as similar (ties count against the model, so a collapsed embedding scores 0, not 1).
  Similarities are computed `chunk` rows at a time: memory O(chunk x items).
"""
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from ssl_jax import losses


def prompt_texts(class_names: Sequence[str], templates: Sequence[str]) -> list[str]:
  """Every template filled with every class name, class-major: [C * T] prompts."""
  if not templates or any("{}" not in template for template in templates):
    raise ValueError(f"zero-shot prompt templates must each contain '{{}}', got "
                     f"{list(templates)}")
  return [template.format(name) for name in class_names for template in templates]


def _normalised(x: np.ndarray) -> np.ndarray:
  """Unit rows in float32 (`losses.l2_normalize`), as a NumPy array."""
  return np.asarray(losses.l2_normalize(jnp.asarray(x, jnp.float32)))


def zero_shot_classifier(prompt_embeddings: np.ndarray, num_classes: int) -> np.ndarray:
  """[C * T, d] prompt embeddings (class-major, as `prompt_texts` orders them) -> [C, d] unit
  class embeddings: the mean of each class's normalised prompt embeddings, renormalised."""
  embeddings = _normalised(prompt_embeddings)
  if embeddings.shape[0] % num_classes:
    raise ValueError(f"{embeddings.shape[0]} prompt embeddings do not split into "
                     f"{num_classes} classes")
  return _normalised(embeddings.reshape(num_classes, -1, embeddings.shape[-1]).mean(axis=1))


def zero_shot_predict(image_embeddings: np.ndarray, class_embeddings: np.ndarray
                      ) -> np.ndarray:
  """The class [N] whose embedding has the highest cosine similarity to each image."""
  return np.argmax(_normalised(image_embeddings) @ _normalised(class_embeddings).T, axis=1)


def retrieval_recall(image_embeddings: np.ndarray, text_embeddings: np.ndarray,
                     text_image: np.ndarray, ks: Sequence[int] = (1, 5), chunk: int = 1024,
                     kinds: tuple[str, str] = ("image", "text")) -> dict[str, float]:
  """Recall@k of image -> text and text -> image retrieval (see the module docstring).

  image_embeddings [N, d]; text_embeddings [M, d]; text_image [M], the index of each text's
  image. Returns {"image_to_text_r{k}", "text_to_image_r{k}": fraction} for each k, the two
  kinds of input named by `kinds` (a clip and its sound: ("video", "audio")).
  """
  first, second = kinds
  images, texts = _normalised(image_embeddings), _normalised(text_embeddings)
  text_image = np.asarray(text_image)
  if len(text_image) != len(texts) or np.any((text_image < 0) | (text_image >= len(images))):
    raise ValueError("text_image must give, for every text, the index of an image")
  captioned = np.bincount(text_image, minlength=len(images)) > 0
  image_ranks = []
  for start in range(0, len(images), chunk):
    rows = np.arange(start, min(start + chunk, len(images)))
    similarity = images[rows] @ texts.T
    own = text_image[None, :] == rows[:, None]
    best_own = np.max(np.where(own, similarity, -np.inf), axis=1)
    image_ranks.append(np.sum((similarity >= best_own[:, None]) & ~own, axis=1))
  image_ranks = np.concatenate(image_ranks)[captioned]  # an image without captions is skipped
  text_ranks = []
  for start in range(0, len(texts), chunk):
    rows = np.arange(start, min(start + chunk, len(texts)))
    similarity = texts[rows] @ images.T
    true = similarity[np.arange(len(rows)), text_image[rows]]
    text_ranks.append(np.sum(similarity >= true[:, None], axis=1) - 1)
  text_ranks = np.concatenate(text_ranks)
  recalls = {}
  for k in ks:
    recalls[f"{first}_to_{second}_r{k}"] = float(np.mean(image_ranks < k))
    recalls[f"{second}_to_{first}_r{k}"] = float(np.mean(text_ranks < k))
  return recalls
