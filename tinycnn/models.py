"""Ready-made architectures. Each takes in_channels, num_classes and the input size, so it
fits images other than 28x28 MNIST digits."""
import numpy as np

from .layers import BatchNorm1D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU
from .layers.base import pair
from .model import Sequential


def _classifier(model, scale=0.1):
    """Shrink the last layer's initial weights so the untrained model predicts nearly
    uniform probabilities (loss ~ ln K) instead of confident noise: He initialisation is
    right for layers feeding a ReLU, but makes initial logits of std ~3-4 here (loss ~6),
    and the first epoch is then spent undoing that."""
    model.layers[-1].params["W"] *= np.float32(scale)
    return model


def _flat_size(layers, input_shape):
    """Number of features after running `layers` on one example of `input_shape`."""
    return int(np.prod(Sequential(layers).output_shapes(input_shape)[-1]))


def convnet(in_channels=1, num_classes=10, input_size=28, dropout=0.5, batchnorm=False, seed=0):
    """The classic Keras MNIST example: two 3x3 convolutions (32, 64 filters), each with
    ReLU and 2x2 max pooling, then dropout and one dense layer (1600 -> 10 for MNIST).
    The ReLU is built into the convolution (activation="relu", as in the Keras code), which
    the fast kernels apply without a pass of their own. batchnorm=True puts a BatchNorm2D
    between each convolution and a separate ReLU."""
    shape = (in_channels, *pair(input_size, "input_size"))
    features = []
    for c_in, c_out in ((in_channels, 32), (32, 64)):
        if batchnorm:
            features += [Conv2D(c_in, c_out, 3), BatchNorm2D(c_out), ReLU(), MaxPool2D(2)]
        else:
            features += [Conv2D(c_in, c_out, 3, activation="relu"), MaxPool2D(2)]
    features.append(Flatten())
    head = [Dropout(dropout), Dense(_flat_size(features, shape), num_classes)]
    return _classifier(Sequential(features + head, input_shape=shape, seed=seed))


def convnet_bn(in_channels=1, num_classes=10, input_size=28, dropout=0.5, seed=0):
    """convnet with batch normalisation after each convolution."""
    return convnet(in_channels, num_classes, input_size, dropout, batchnorm=True, seed=seed)


def lenet5(in_channels=1, num_classes=10, input_size=28, seed=0):
    """LeNet-5 with ReLU and max pooling: conv 6@5x5 (padding 2), pool, conv 16@5x5, pool,
    then dense 400 -> 120 -> 84 -> classes for MNIST. The convolutions have the ReLU built in."""
    shape = (in_channels, *pair(input_size, "input_size"))
    features = [Conv2D(in_channels, 6, 5, padding=2, activation="relu"), MaxPool2D(2),
                Conv2D(6, 16, 5, activation="relu"), MaxPool2D(2), Flatten()]
    head = [Dense(_flat_size(features, shape), 120), ReLU(), Dense(120, 84), ReLU(),
            Dense(84, num_classes)]
    return _classifier(Sequential(features + head, input_shape=shape, seed=seed))


def fastnet(in_channels=1, num_classes=10, input_size=28, batchnorm=False, seed=0):
    """A small, quick MNIST net (after a published one-epoch speed-run recipe): conv 24@5x5,
    max pool, ReLU, conv 32@5x5, max pool, ReLU, dense 512 -> 256 -> classes.

    Pooling comes before the ReLU: max(relu(a), relu(b)) = relu(max(a, b)), so the result is
    the same, but the ReLU then touches 4x fewer values. batchnorm=True adds a BatchNorm2D
    between each pool and its ReLU (on the pooled maps, so it too touches 4x fewer values)."""
    shape = (in_channels, *pair(input_size, "input_size"))
    features = []
    for c_in, c_out in ((in_channels, 24), (24, 32)):
        features += [Conv2D(c_in, c_out, 5), MaxPool2D(2)] + ([BatchNorm2D(c_out)] if batchnorm else []) + [ReLU()]
    features.append(Flatten())
    head = [Dense(_flat_size(features, shape), 256), ReLU(), Dense(256, num_classes)]
    return _classifier(Sequential(features + head, input_shape=shape, seed=seed))


def bnnet(in_channels=1, num_classes=10, input_size=28, dropout=0.3, seed=0):
    """The accuracy model: three convolutions, each followed by batch normalisation and ReLU.

        conv 32@5x5 -> BN -> ReLU -> pool 2      28x28 -> 24x24 -> 12x12
        conv 64@3x3 -> BN -> ReLU                12x12 -> 10x10
        conv 64@3x3 -> BN -> ReLU -> pool 2      10x10 -> 8x8 -> 4x4
        dense 1024 -> 128 -> BN -> ReLU -> dropout -> dense 128 -> classes

    Batch normalisation keeps each layer's inputs at zero mean and unit variance while the
    weights move, which allows larger learning rates and makes training less sensitive to
    initialisation; two stacked 3x3 convolutions see a 5x5 window with fewer weights and an
    extra non-linearity. The convolutions feeding a BN layer have no bias: BN subtracts the
    channel mean, which would cancel it (beta plays its role). About 4.8 million
    multiply-adds per 28x28 image, twice convnet's."""
    shape = (in_channels, *pair(input_size, "input_size"))
    features = [Conv2D(in_channels, 32, 5, bias=False), BatchNorm2D(32), ReLU(), MaxPool2D(2),
                Conv2D(32, 64, 3, bias=False), BatchNorm2D(64), ReLU(),
                Conv2D(64, 64, 3, bias=False), BatchNorm2D(64), ReLU(), MaxPool2D(2), Flatten()]
    head = [Dense(_flat_size(features, shape), 128, bias=False), BatchNorm1D(128), ReLU(),
            Dropout(dropout), Dense(128, num_classes)]
    return _classifier(Sequential(features + head, input_shape=shape, seed=seed))


ARCHITECTURES = {"convnet": convnet, "convnet-bn": convnet_bn, "lenet5": lenet5, "fastnet": fastnet,
                 "bnnet": bnnet}
