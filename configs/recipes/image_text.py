"""Image–caption dataset recipes: the keys of the image–text pipeline, the embedded
captioned images and COCO captions (Karpathy splits)."""
import ml_collections

from configs.recipes import augmentations


def caption_data(c: ml_collections.ConfigDict) -> None:
  """The image–text pipeline's keys (ssl_jax/data/image_text_pipeline.py): one view per image,
  captions in TFDS coco_captions' layout, rows of 24 tokens, 3 captions per test image."""
  c.data.update(modality="image_text", num_views=1, caption_key="captions",
                caption_text_key="text", max_length=24, eval_captions=3)


def captioned_images(c: ml_collections.ConfigDict, variant: str) -> None:
  """`captioned_images/<variant>` (digits: 16 px, photos: 32 px), whole images."""
  c.dataset = f"captioned_images/{variant}"
  side = 16 if variant == "digits" else 32
  c.data.update(image_size=side, crop="none", max_length=24, eval_captions=3)
  # Colour-faithful (a caption names the colours) and unflipped (it names left and right):
  # no photometric or geometric augmentation, as in CLIP (Radford et al. 2021, Sec. 2.5).
  mean, std = ((0.35,) * 3, (0.4,) * 3) if variant == "digits" else (
      augmentations.PHOTOS_MEAN, augmentations.PHOTOS_STD)
  c.augment = augmentations.augment_config(mean=mean, std=std)


def coco_captions(c: ml_collections.ConfigDict) -> None:
  """TFDS coco_captions: train on train+restval, retrieve on the Karpathy 5k test split; 224 px
  random resized crops of 50-100% of the image, centre crops in evaluation, 77-token rows,
  5 captions per test image, ImageNet statistics."""
  c.dataset = "coco_captions"
  c.data.update(train_split="train+restval", test_split="test", label_key=None,
                image_size=224, crop="random_resized", crop_scale=(0.5, 1.0),
                eval_crop="center", eval_resize=224, max_length=77, eval_captions=5)
  c.augment = augmentations.augment_config(mean=augmentations.IMAGENET_MEAN,
                                           std=augmentations.IMAGENET_STD)
