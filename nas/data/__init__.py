"""Image datasets from local files (digits built in), splits, augmentation and batch plans."""
from nas.data.augment import Augment
from nas.data.batches import BatchPlan
from nas.data.dataset import ImageDataset, load_dataset
from nas.data.sources import LAYOUTS, LabelledImages

__all__ = ["LAYOUTS", "Augment", "BatchPlan", "ImageDataset", "LabelledImages", "load_dataset"]
