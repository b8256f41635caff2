"""Fast kernels, jitted with Numba. Same names, signatures and results as `reference.py`.

One file per family, each explaining its own layout:
    parallel.py      how a kernel's work is shared among threads (and why that keeps the
                     first compile short)
    gemm.py          the matrix product: NumPy's own BLAS, called from inside the kernels
    conv.py          the convolution layers' kernels: picks a method per layer and pass
    conv_gemm.py     im2col + GEMM, block by block in cache-sized pieces (many channels)
    conv_direct.py   shifted multiply-adds over flattened padded planes (few channels)
    conv_blocked.py  the forward pass with 16 channels x 4 (AVX-512: 8) pixels of output
                     held in registers (stride-1 layers with 16 channels or more; a last
                     block may overlap the one before: fastnet's two, LeNet-5's second,
                     bnnet's first, and on AVX2 bnnet's third forward; with AVX-512,
                     fastnet's second)
    conv_winograd.py Winograd F(2x2, 3x3): 3x3 layers with 2.25x fewer multiplications
                     (the maths and its NumPy twin: tinycnn/kernels/winograd.py)
    epilogue.py      bias, ReLU and 2x2 max pooling applied as an output plane is written,
                     and their adjoints applied as its gradient is read
    pooling.py       max and average pooling
    relu.py          ReLU
    batchnorm.py     batch normalisation statistics, forward and backward
Functions compile on first use for the dtype they see (float32 in training, float64 in
gradient checks); `cache=True` keeps the machine code on disk between runs.
"""
from .batchnorm import batchnorm_backward, batchnorm_forward, batchnorm_stats
from .conv import conv2d_backward, conv2d_forward, conv2d_relu_maxpool2_backward, conv2d_relu_maxpool2_forward
from .conv_gemm import col2im, im2col
from .pooling import avgpool2d_backward, avgpool2d_forward, maxpool2d_backward, maxpool2d_forward
from .relu import relu_backward, relu_forward
from ..reference import conv_output_size

__all__ = ["avgpool2d_backward", "avgpool2d_forward", "batchnorm_backward", "batchnorm_forward", "batchnorm_stats",
           "col2im", "conv2d_backward", "conv_output_size", "conv2d_forward", "conv2d_relu_maxpool2_backward",
           "conv2d_relu_maxpool2_forward", "im2col", "maxpool2d_backward", "maxpool2d_forward", "relu_backward",
           "relu_forward"]
