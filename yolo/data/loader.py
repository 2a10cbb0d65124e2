"""Batching: the collate function and a DataLoader (optionally distributed) over a DetectionDataset."""

import random

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from .augment import PAD_VALUE
from .dataset import create_dataset


def collate(batch):
    """-> (imgs float (B, 3, H, W) in [0, 1], targets (n, 6) [image index in batch, cls, xc, yc, w, h], metas).

    Images of different sizes (rectangular letterbox) are padded at the bottom/right to the largest, and
    their normalized labels rescaled to the padded size; meta pad stays valid as padding starts top-left.
    """
    imgs, labels, metas = zip(*batch)
    h = max(img.shape[1] for img in imgs)
    w = max(img.shape[2] for img in imgs)
    out = torch.full((len(imgs), 3, h, w), PAD_VALUE, dtype=torch.uint8)
    targets = []
    for i, (img, lab) in enumerate(zip(imgs, labels)):
        ih, iw = img.shape[1:]
        out[i, :, :ih, :iw] = img
        lab = lab.clone()
        lab[:, [1, 3]] *= iw / w
        lab[:, [2, 4]] *= ih / h
        targets.append(torch.cat([torch.full((len(lab), 1), float(i)), lab], dim=1))
    return out.float().div_(255), torch.cat(targets).reshape(-1, 6), list(metas)


def seed_worker(worker_id):
    """Give numpy and random in each worker the seed torch gave it (forked workers would share one)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    torch.set_num_threads(1)   # workers decode images; leave the cores' threads to the model


def create_dataloader(split, names, img_size, batch_size, augment, hyp, workers=0, shuffle=False,
                      rank=-1, world_size=1, seed=0, skip_bad=False, decode=None):
    """-> (loader, dataset). With world_size > 1 a DistributedSampler(rank, world_size, shuffle, seed)
    splits the data; call `loader.sampler.set_epoch(epoch)` each epoch to reshuffle it."""
    dataset = create_dataset(split, names, img_size, augment, hyp, skip_bad=skip_bad, decode=decode)
    sampler = None
    if world_size > 1:
        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=max(rank, 0), shuffle=shuffle, seed=seed)
    generator = torch.Generator()
    generator.manual_seed(seed + max(rank, 0))   # ranks draw different augmentations
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
        num_workers=workers, collate_fn=collate, worker_init_fn=seed_worker, generator=generator,
        pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0,
    )
    return loader, dataset
