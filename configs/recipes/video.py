"""Video dataset recipes: the keys of the video pipeline (clips of frames)."""
import ml_collections

from configs.recipes import augmentations


def video_data(c: ml_collections.ConfigDict, dataset: str, video_key: str,
               label_key: str | None, num_frames: int, image_size: int, channels: int,
               **data) -> None:
  """The video pipeline's keys (ssl_jax/data/video_pipeline.py) for `dataset`."""
  c.dataset = dataset
  c.data.update(modality="video", num_views=1, image_size=image_size, label_key=label_key)
  c.data.video_key = video_key
  c.data.num_frames = num_frames
  c.data.frame_stride = 1
  c.data.update(data)
  # Frames are modelled on the [0, 1] scale; the pictures are un-normalised with mean 0, std 1.
  c.augment = augmentations.augment_config(mean=(0.0,) * channels, std=(1.0,) * channels)
