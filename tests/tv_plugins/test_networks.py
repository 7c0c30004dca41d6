import pytest
import torch

from tv_plugins import ConvNet


@pytest.mark.parametrize("norm", ["instance", "batch", "layer", "group", "none"])
@pytest.mark.parametrize("size,depth", [(28, 3), (16, 2), (8, 4)])
def test_convnet_shapes_and_feature_dim(norm, size, depth):
    net = ConvNet(in_channels=1, num_classes=7, image_size=size, depth=depth, width=8, norm=norm)
    x = torch.randn(3, 1, size, size)
    side = size
    for _ in range(depth):
        side = side // 2 if side >= 2 else side
    assert net.embed(x).shape == (3, 8 * side * side) == (3, net.feature_dim)
    assert net(x).shape == (3, 7)


def test_convnet_instance_norm_normalises_each_sample_and_channel():
    net = ConvNet(in_channels=1, image_size=8, depth=1, width=4, norm="instance")
    conv, norm = net.features[0], net.features[1]
    h = norm(conv(torch.randn(2, 1, 8, 8) * 5 + 3))
    # affine weights are initialised to (1, 0): each (sample, channel) map has mean 0 and variance 1
    assert torch.allclose(h.mean(dim=(2, 3)), torch.zeros(2, 4), atol=1e-5)
    assert torch.allclose(h.var(dim=(2, 3), unbiased=False), torch.ones(2, 4), atol=1e-3)


def test_convnet_rejects_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="norm"):
        ConvNet(norm="spectral")
    with pytest.raises(ValueError, match="depth"):
        ConvNet(depth=0)
    with pytest.raises(ValueError, match="expected input"):
        ConvNet(in_channels=1, image_size=16, width=4)(torch.randn(2, 3, 16, 16))
