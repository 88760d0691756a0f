"""RIB's memory is bounded (issue 16 item 2): one adapted copy of the model at a time, nothing kept after an
image, and a size-bounded cache of decoded companions in a bounded number of pools."""

from __future__ import annotations

import gc
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import weakseg.attribution.rib as rib_module
from tests.conftest import random_bn_classifier
from weakseg.attribution import CAM, RIB, MultiScale, compute_maps
from weakseg.attribution.compose import Adapted
from weakseg.attribution.rib import CompanionPool, companion_pool
from weakseg.data.augment import to_tensor
from weakseg.data.voc import VOCDataset
from weakseg.models.resnet_cam import CAMClassifier

TWO_SCALES = MultiScale(scales=(1.0, 0.5), flip=True)


def live_classifiers() -> int:
    """CAMClassifier objects alive now (after a collection)."""
    gc.collect()
    return sum(issubclass(type(o), CAMClassifier) for o in gc.get_objects())


@dataclass(frozen=True)
class CountingCAM(CAM):
    """CAM that records how many classifiers are alive each time it is asked for maps."""

    seen: list
    name = "counting-cam"

    def scale_maps(self, model, x, classes, *, image_key=""):
        self.seen.append(live_classifiers())
        return super().scale_maps(model, x, classes, image_key=image_key)


@pytest.fixture(scope="module")
def sample(tiny_synth):
    ds = VOCDataset(tiny_synth, "train", labels="auto")
    image_id = ds.ids[5]
    image = F.interpolate(to_tensor(ds.image(image_id))[None], size=(40, 40), mode="bilinear", align_corners=False)[0]
    return image_id, image, [c - 1 for c in ds.label_ids(image_id)]


def test_one_adapted_copy_at_a_time_and_none_left_after_the_image(tiny_synth, sample):
    image_id, image, classes = sample
    model = random_bn_classifier()
    rib = RIB(data=str(tiny_synth), steps=3, batch=3, crop=24, lr=1e-2)
    baseline = live_classifiers()
    seen: list[int] = []
    maps = compute_maps(Adapted(rib, CountingCAM(seen), at="every"), model, image, classes, TWO_SCALES, image_key=image_id)
    assert len(seen) == (3 + 1) * 2  # K+1 models x 2 scales
    assert max(seen) - baseline == 1  # the caller's model plus ONE adapted copy, whatever K is
    assert live_classifiers() == baseline  # nothing outlives the image (no per-thread cache of adapted models)
    # the same maps as RIB itself, and as the sum over K+1 separately adapted copies at each scale
    assert torch.equal(maps, compute_maps(rib, model, image, classes, TWO_SCALES, image_key=image_id))
    assert live_classifiers() == baseline
    x = torch.stack([image, image.flip(-1)])
    copies = rib.adapt(model, x, torch.tensor(classes), image_key=image_id)
    assert len(copies) == 4 and copies[0] is model
    assert len({id(c) for c in copies}) == 4  # adapt() hands out a copy per step
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), copies[1].parameters(), strict=True))


def test_trajectory_is_taken_from_the_copy_before_each_update(tiny_synth, sample):
    image_id, image, classes = sample
    model = random_bn_classifier()
    rib = RIB(data=str(tiny_synth), steps=2, batch=3, crop=24, lr=1e-2)
    x = torch.stack([image, image.flip(-1)])
    cls = torch.tensor(classes)
    traj = rib.trajectory_maps(model, x, cls, image_key=image_id)
    expected = torch.stack([CAM().scale_maps(m, x, cls) for m in rib.adapt(model, x, cls, image_key=image_id)])
    assert traj.shape[0] == 3 and torch.equal(traj, expected)
    last = rib.adapt(model, x, cls, image_key=image_id, keep="last")
    assert len(last) == 1 and torch.equal(CAM().scale_maps(last[0], x, cls), traj[-1])


def test_decoded_companions_are_bounded_and_evicted_least_recent_first(tiny_synth):
    ds = VOCDataset(tiny_synth, "train", labels="auto")
    one = ds.image(ds.ids[0]).nbytes  # every tiny_synth image has the same size
    pool = CompanionPool(str(tiny_synth), "train", "auto", cache_bytes=3 * one)
    for i in ds.ids[:10]:
        assert np.array_equal(pool.image(i), ds.image(i))
        assert pool.cached_bytes <= 3 * one
    assert list(pool._images) == ds.ids[7:10]
    pool.image(ds.ids[7])  # a hit moves it to the back
    pool.image(ds.ids[0])
    assert list(pool._images) == [ds.ids[9], ds.ids[7], ds.ids[0]]
    unbounded = CompanionPool(str(tiny_synth), "train", "auto", cache_bytes=0)  # caches nothing, same batches
    picks = list(ds.ids[1:8])
    a = pool.batch(picks, np.random.default_rng(3), 24, (0.75, 1.25), torch.device("cpu"), torch.float32)
    b = unbounded.batch(picks, np.random.default_rng(3), 24, (0.75, 1.25), torch.device("cpu"), torch.float32)
    assert unbounded.cached_bytes == 0 and all(torch.equal(p, q) for p, q in zip(a, b, strict=True))


def test_at_most_max_pools_are_kept(tiny_synth, tmp_path):
    import shutil

    copies = []
    for n in range(rib_module.MAX_POOLS + 1):
        copies.append(tmp_path / f"copy{n}")
        shutil.copytree(tiny_synth, copies[-1])
    pools = [companion_pool(str(c), "train", "auto") for c in copies]
    assert len(rib_module._POOLS) <= rib_module.MAX_POOLS
    assert pools[-1] is companion_pool(str(copies[-1]), "train", "auto")  # still cached
    assert pools[0] is not companion_pool(str(copies[0]), "train", "auto")  # the least recent was dropped
