import gzip

import numpy as np
import pytest
import torch
from torchvision import transforms

from tv_plugins import DigitsDataset, load_fashion_mnist


def test_digits_split_is_stratified_disjoint_and_seeded():
    from sklearn.datasets import load_digits

    train, test = DigitsDataset(train=True), DigitsDataset(train=False)
    assert len(train) + len(test) == 1797
    assert set(torch.unique(test.targets).tolist()) == set(range(10))
    raw = load_digits()
    # every test image is a real digit, rescaled 0..16 -> 0..255, and absent from train
    flat_raw = {tuple((im * 255 / 16).round().astype(np.uint8).ravel()) for im in raw.images}
    train_set = {tuple(x.ravel().tolist()) for x in train.data.numpy()}
    test_set = {tuple(x.ravel().tolist()) for x in test.data.numpy()}
    assert test_set <= flat_raw and train_set <= flat_raw
    assert torch.equal(DigitsDataset(train=False, seed=0).targets, test.targets)
    assert not torch.equal(DigitsDataset(train=False, seed=3).data, test.data)


def test_digits_items_follow_mnist_conventions_and_honour_transforms():
    ds = DigitsDataset(image_size=16, transform=transforms.ToTensor(), target_transform=lambda y: y + 100)
    image, label = ds[0]
    assert image.shape == (1, 16, 16) and image.dtype == torch.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert label == int(ds.targets[0]) + 100
    pil, _ = DigitsDataset(image_size=8)[0]
    assert pil.mode == "L" and pil.size == (8, 8)


@pytest.mark.parametrize("size", [16, 28, 32])
def test_digits_upsampling_preserves_the_image(size):
    small, big = DigitsDataset(image_size=8), DigitsDataset(image_size=size)
    assert big.data.shape[1:] == (size, size)
    down = torch.nn.functional.adaptive_avg_pool2d(big.data[:, None].float(), 8)[:, 0]
    corr = np.corrcoef(down.flatten().numpy(), small.data.float().flatten().numpy())[0, 1]
    assert corr > 0.95


def test_digits_rejects_bad_arguments():
    with pytest.raises(ValueError, match="image_size"):
        DigitsDataset(image_size=12)
    with pytest.raises(ValueError, match="test_fraction"):
        DigitsDataset(test_fraction=1.5)


def _write_idx(path, array):
    """Write an IDX file (big-endian header) the way the Fashion-MNIST distribution does."""
    dims = array.shape
    code = 0x08  # unsigned byte
    header = bytes([0, 0, code, len(dims)]) + b"".join(int(d).to_bytes(4, "big") for d in dims)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_from_debian_layout(tmp_path):
    source = tmp_path / "debian"
    source.mkdir()
    rng = np.random.default_rng(0)
    images = {"train": rng.integers(0, 256, (12, 28, 28)), "t10k": rng.integers(0, 256, (5, 28, 28))}
    labels = {"train": rng.integers(0, 10, 12), "t10k": rng.integers(0, 10, 5)}
    for split in ("train", "t10k"):
        _write_idx(source / f"{split}-images-idx3-ubyte.gz", images[split])
        _write_idx(source / f"{split}-labels-idx1-ubyte.gz", labels[split])
    root = tmp_path / "root"
    train = load_fashion_mnist(root, train=True, source_dir=source)
    test = load_fashion_mnist(root, train=False, source_dir=source, transform=transforms.ToTensor())
    assert (root / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").exists()
    assert len(train) == 12 and len(test) == 5
    assert np.array_equal(train.data.numpy(), images["train"]) and train.targets.tolist() == labels["train"].tolist()
    x, y = test[2]
    assert x.shape == (1, 28, 28) and y == labels["t10k"][2]
    assert torch.allclose(x[0] * 255, torch.from_numpy(images["t10k"][2]).float())
    # second call reads torchvision's raw folder; the source is no longer needed
    for f in source.iterdir():
        f.unlink()
    assert len(load_fashion_mnist(root, source_dir=source)) == 12


def test_fashion_mnist_missing_says_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path / "root", source_dir=tmp_path / "nowhere")
