"""Dataset and augmentation recipes shared by the method configs, one module per modality."""
