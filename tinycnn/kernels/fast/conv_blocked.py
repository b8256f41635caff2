"""The direct convolution with its accumulators in registers: 16 output channels x 4 output
pixels at a time (16 x 8 on a CPU with 512-bit vectors, below), forward only, for stride-1
layers with at least one block of channels and of columns, computing at most 4/3 of either
(a last block overlaps the one before, below): fastnet's two layers, LeNet-5's second and
bnnet's first, and bnnet's third in place of Winograd's forward (conv.BLOCKED_BEFORE_WINOGRAD);
with 512-bit vectors, fastnet's second only (the first layers have 25 taps, below MIN_TAPS;
LeNet-5's 10 columns would take 1.6x in 8-pixel blocks).

conv_direct.py adds one tap at a time to a whole output plane in memory, and conv_gemm.py
copies every input window out (im2col) for BLAS to multiply: both move memory for every
multiply-add or two. Here a block of the output, 16 channels f0..f0+15 of 4 neighbouring
pixels in one row (oh, ow0..ow0+3), stays in 64 scalar accumulators while the sum runs
over all taps (c, i, j):

    a[p][k] += xpad[c, oh + i, ow0 + j + p] * W[f0 + k, c, i, j]        p = 0..3, k = 0..15

Per tap that is 16 weights (one contiguous run: the weights are laid out (taps, F), W's
transpose) and 4 neighbouring input values (the padded image is one flat array) for 64
multiply-adds. LLVM's SLP vectoriser packs each pixel's 16 accumulators into two 8-lane
registers (float32 in 256-bit registers; float64, for the gradient checks, takes four) and
each row of 16 multiply-adds into two fused multiply-adds ('contract' allows the fusing)
with the input value broadcast: per tap, 2 vector loads of weights, 4 broadcasts and 8
FMAs, in 8 accumulator registers + 2 + 4 = 14 of AVX2's 16 vector registers. Indices are
unsigned (uintp) so that Numba adds no negative-index handling, which would stop the loads
being seen as one contiguous run. Numba leaves the SLP vectoriser off, so these shares are
compiled with it on (parallel.slp_share); without it the same code ran at 8-9 GFLOP/s.
Written as loops over k and p, the accumulators stayed in memory (7 GFLOP/s); with the
input as 3-D planes and separate loops over c, i and j, 20% slower than one loop over the
taps (the loops over i and j are too short). One trap: the accumulators start from a zero
of x's dtype; `0 * a float32` is a float64 in Numba, and float64 sums were 2.5x slower.

Why not 8 channels x 8 pixels, as many sums, which this kernel used until session 17: it
kept one register per channel (its 8 pixels' sums), fed per tap by the input vector and
each channel's weight broadcast. LLVM's schedule for AMD's Zen 3 and Zen 4 loaded all 8
broadcast weights before the multiply-adds, so a tap held 8 accumulators, the input vector
and 8 weights: 17 registers, one more than AVX2 has. It kept one accumulator in memory,
whose store and reload then lay on the chain of additions. On fastnet's second layer (24 ->
32 channels, 5x5, 12x12 inputs, batch 128, ReLU and pooling) on a 2-core AMD EPYC (Zen 4,
AVX2; LLVM target znver4), one thread: 8 x 8 blocks 35 GFLOP/s, 16 x 4 blocks 62, NumPy's
sgemm on 1024x1024 matrices 84 on the same core; two threads: 4.69 against 2.29 ms, the
GEMM method 3.68 ms. Compiled for other targets on the same machine (NUMBA_CPU_NAME, one
thread): haswell 57 against 64 GFLOP/s, znver3 35 against 63, znver2 43 against 58. Session
13's AVX2 EPYC had run 8 x 8 blocks at 79 GFLOP/s (its compiler target is not recorded).

A layer whose channels are not whole blocks of 16 (fastnet's first: 24) lets its last block
start early and overlap the one before (channels 8..23 after 0..15): 1.33x the
multiply-adds on that layer, whose 25 taps make it cheap, and no other kernel to compile.
There it ran level with the GEMM (1.90 against 1.80 ms forward, batch 128, pooled, in one
process, noisy); bnnet's first layer, 32 channels, 1.60 against 1.80.

512-bit vectors (AVX-512; measured on the AMD EPYC "Zen 5" machines here). With 16 floats
per register and 32 registers, the block is 16 channels x 8 pixels: each pixel's 16 channel
sums are one register; per tap, one vector load brings the 16 weights Wt[tap, f0:f0 + 16],
each of the 8 input values is broadcast, and 8 fused multiply-adds do 128 multiply-adds.
Every sum adds the same products in the same order in both blocks, so they give the same
bits. LLVM compiles a tap to one 512-bit load of the weights and 8 FMAs that each broadcast
their input value from memory ({1to16}): nothing else in the loop. Measured on fastnet's
second layer (as above, batch 128, one thread) on a 2-core AMD EPYC "Zen 5" (family 26):
150 GFLOP/s against 91 for 8 x 8 blocks of 8-lane registers, 1.65x, in one process (NumPy's
sgemm: about 235 GFLOP/s per core there with its AVX-512 kernel); the 16 x 8 share compiles
in 3.2 s of CPU against 1.8. Each machine compiles one of the two blocks.

Which layers (conv.forward_method). Measured in session 13 (README, "Performance") on a
2-core AMD EPYC, two threads, against im2col + GEMM: fastnet's 24->32 5x5 forward 2.14
against 2.92 ms at batch 128 (bench_conv_methods.py); its 1->24 first layer, pooled, level
with GEMM (1.57-1.60 against 1.55-1.59 ms at batch 256), and taken all the same: it adds
nothing to compile, the second layer's kernel being the same; bnnet's 1->32, not pooled,
2.40 against 2.70 ms. Whole models (benchmarks/bench_switch.py, on against off in one
process, timed round by round before session 18's pairs of calls): fastnet's training step
1.06-1.07x faster, its inference 1.16-1.22x; bnnet's 0.99x and 1.03x (its first layer is a
small part of its step). (Those were 8 x 8 blocks; session 17's 16 x 4 figures are in the
README, "Performance".)
Since session 17 a last block of columns may overlap the one before as well, when the
blocks compute at most 4/3 of the columns (applies; with both overlapping, up to 16/9 of
the sums): LeNet-5's 10 columns take 4-pixel blocks at 0, 4 and 6 (1.2x), and the method
replaces the GEMM forward in LeNet-5's plan rather than adding a kernel to compile. With
session 13's 8-pixel blocks that would have been 1.6x, worth 2% of LeNet-5's training step
and 6% of its inference, and a kernel more to compile (first step 4.2-5.0 -> 5.4-6.0 s).
The bias, ReLU and pooling are applied to each finished plane (epilogue.py).

The weight gradient by the same blocking (8 taps x 8 channels in registers, summed over
pixels straight from the padded input, no im2col) was built and dropped: 1.3x faster than
GEMM on fastnet's second layer and 1.5x on LeNet-5's, whole steps 5-6% faster, but a
third kernel of this size to compile on a first run (3 s of CPU): fastnet's and LeNet-5's
first training steps on an empty cache took 6.1-6.8 s instead of 3.8-4.3 (it is in the
git history: the commit "Register-blocked direct convolution").
Session 18 computed the weight gradient with this very share instead, nothing more to
compile: dW[f, c, i, j] = sum over (n, oh, ow) of dy[n, f, oh, ow] * x[n, c, oh + i, ow + j]
is the forward sum with the output pixels as taps, dy as the weights (taps, F) and the
kernel's entries (c, i, j) as the output; with x laid out channels last in groups of 4
channels, 4 channels of one kernel position are 4 neighbours, as a block reads them
(docs/10 works one block by hand). On fastnet's second layer it ran 1.29x as fast as the
GEMM's weight gradient, pooling backward included (the median of paired calls; LeNet-5's
1.31x), whole training steps 1.02-1.05x (batch 128 and 256, paired calls in one
process). But the two layouts had to be written inside the GEMM backward's share, as it
read each image (in NumPy the 6-D transpose took 0.6 ms and the gain was gone: 0.98-1.00x),
and that added 0.5-0.9 s of CPU to that share's compilation, which every built-in model
pays on its first run (fastnet's first step, 4 cold runs alternated, 4.61 -> 4.94 s
median), the convnet and bnnet for nothing. It is in the git history (the commit
"The weight gradient by the blocked forward kernel").
"""
import numba
import numpy as np
from llvmlite import binding
from numba import njit, uintp

from .conv_direct import pad_into, tap_offsets
from .epilogue import write_plane
from .parallel import JIT, in_parallel, share_range, slp_share, threads_for


def wide_vectors():
    """Whether Numba compiles with 512-bit vectors (AVX-512F): the features it compiles
    for are NUMBA_CPU_FEATURES when set, else the host CPU's (whatever NUMBA_CPU_NAME says)."""
    features = numba.config.CPU_FEATURES or binding.get_host_cpu_features().flatten()
    return "+avx512f" in features.split(",")


WIDE = wide_vectors()
BLOCK_F = 16                    # output channels per block (one 512-bit register, or two 256-bit)...
BLOCK_P = 8 if WIDE else 4      # ...times 8 (AVX-512) or 4 (AVX2) output pixels of one row


# Taps (C*kh*kw) a layer needs to take this method (conv.forward_method). With 512-bit
# vectors a first layer, one input channel, ran faster on the GEMM, whose sgemm has an
# AVX-512 kernel too: bnnet's 1->32 5x5 forward 0.44 ms against 0.64 blocked, fastnet's
# 1->24 0.37 against 0.52-0.67 (8 x 8 blocks), batch 128, two threads, AMD EPYC "Zen 5"
# (session 16); with 25 taps a block's sums are short and copying and writing the planes
# costs as much. (64 lies between the 25 taps measured slower and fastnet's second layer's
# 600 measured faster.) With AVX2 the first layers were level with the GEMM or faster
# (above), and take the blocked method.
MIN_TAPS = 64 if WIDE else 1


def applies(F, OW, stride):
    """Whether a layer can take this method: stride 1, at least one block of channels and
    of columns, and at most a third more of either computed than the layer has (a last
    block that would run past F or OW overlaps the one before: _forward_share)."""
    return tuple(stride) == (1, 1) and _fits(F, BLOCK_F) and _fits(OW, BLOCK_P)


def _fits(n, size):
    """n channels (or columns) take blocks of `size`: at least one, and the blocks, the
    last overlapping, compute at most 4/3 of n."""
    blocks = -(-n // size)
    return n >= size and 3 * blocks * size <= 4 * n


def whole_blocks(F, OW):
    """Whether F channels and OW columns are whole blocks, none overlapping."""
    return F % BLOCK_F == 0 and OW % BLOCK_P == 0 and min(F, OW) > 0


def forward(x, Wm, b, kh, kw, ph, pw, OH, OW, relu, pool, taps):
    """As conv_gemm.forward, for stride 1 (see applies)."""
    N, C, H, W = x.shape
    F = Wm.shape[0]
    # (fewer than a block: the kernel would read and write past its arrays; more than 4/3
    # computed: not worth it)
    if not applies(F, OW, (1, 1)):
        raise ValueError(f"conv_blocked: {F} channels and {OW} columns do not fit blocks of "
                         f"{BLOCK_F} channels and {BLOCK_P} columns")
    Wp = W + 2 * pw
    offsets = tap_offsets(C, kh, kw, (H + 2 * ph) * Wp, Wp, 1, 0)
    P = (OH // 2) * (OW // 2) if pool else OH * OW
    y = np.empty((N, F, P), dtype=x.dtype)
    argmax = np.empty((N, F, P) if taps else (0, 0, 0), dtype=np.int8)
    in_parallel(_forward_share, threads_for(N), x, np.ascontiguousarray(Wm.T), offsets, b, y, argmax,
                ph, pw, OH, OW, relu, pool, taps)
    return y, argmax


@slp_share
@njit(fastmath={"contract"}, **JIT)
def _forward_share(t, nchunks, x, Wt, offsets, b, y, argmax, ph, pw, OH, OW, relu, pool, taps):
    """Share t of forward: its run of images, into y and argmax. Wt (taps, F) is W's
    transpose; offsets[k] is tap k's place in the flat padded image."""
    N, C, H, W = x.shape
    F = Wt.shape[1]
    Hp, Wp = H + 2 * ph, W + 2 * pw
    xp = np.zeros(C * Hp * Wp, dtype=x.dtype)                 # the padding stays zero
    conv = np.empty((F, OH * OW), dtype=x.dtype)              # one image's sums, no bias
    # 0 in x.dtype, to start the sums from (0 * a float32 is a float64 in Numba)
    z = np.zeros(1, dtype=x.dtype)[0]
    n0, n1 = share_range(t, nchunks, N)
    for n in range(n0, n1):
        pad_into(x, n, xp, ph, pw, Hp, Wp)
        for f0 in range(0, F, BLOCK_F):
            # A last block that would run past F starts early instead, overlapping the one
            # before (fastnet's 24 channels: 0..15, then 8..23): the shared channels are
            # summed twice, the same products in the same order, so to the same bits.
            f0 = min(f0, F - BLOCK_F)
            for oh in range(OH):
                for ow0 in range(0, OW, BLOCK_P):
                    ow0 = min(ow0, OW - BLOCK_P)            # (the same for columns)
                    _block(xp, Wt, offsets, uintp(oh * Wp + ow0), uintp(f0), conv, uintp(oh * OW + ow0), z)
        for f in range(F):
            write_plane(conv[f], b[f], y, argmax, n, f, OH, OW, relu, pool, taps)


@njit(inline="always", **JIT)
def _block_16x4(xp, Wt, offsets, base, f0, out, o, z):
    """out[f0 + k, o + p] = sum over taps of Wt[tap, f0 + k] * xp[base + offsets[tap] + p],
    for k = 0..15, p = 0..3: one block, in 64 accumulators (see the module's docstring).
    Pixel p's 16 sums a{p}_0..a{p}_15 pack into two 8-lane registers; per tap, two vector
    loads bring the 16 weights Wt[tap, f0:f0 + 16] and each input value xp[s + p] is
    broadcast: 8 accumulator registers, 2 of weights, 4 of inputs, 14 of AVX2's 16."""
    a0_0, a0_1, a0_2, a0_3, a0_4, a0_5, a0_6, a0_7 = z, z, z, z, z, z, z, z
    a0_8, a0_9, a0_10, a0_11, a0_12, a0_13, a0_14, a0_15 = z, z, z, z, z, z, z, z
    a1_0, a1_1, a1_2, a1_3, a1_4, a1_5, a1_6, a1_7 = z, z, z, z, z, z, z, z
    a1_8, a1_9, a1_10, a1_11, a1_12, a1_13, a1_14, a1_15 = z, z, z, z, z, z, z, z
    a2_0, a2_1, a2_2, a2_3, a2_4, a2_5, a2_6, a2_7 = z, z, z, z, z, z, z, z
    a2_8, a2_9, a2_10, a2_11, a2_12, a2_13, a2_14, a2_15 = z, z, z, z, z, z, z, z
    a3_0, a3_1, a3_2, a3_3, a3_4, a3_5, a3_6, a3_7 = z, z, z, z, z, z, z, z
    a3_8, a3_9, a3_10, a3_11, a3_12, a3_13, a3_14, a3_15 = z, z, z, z, z, z, z, z
    for k in range(uintp(offsets.shape[0])):      # every tap (c, i, j)
        s = base + uintp(offsets[k])
        w0, w1, w2, w3 = Wt[k, f0 + uintp(0)], Wt[k, f0 + uintp(1)], Wt[k, f0 + uintp(2)], Wt[k, f0 + uintp(3)]
        w4, w5, w6, w7 = Wt[k, f0 + uintp(4)], Wt[k, f0 + uintp(5)], Wt[k, f0 + uintp(6)], Wt[k, f0 + uintp(7)]
        w8, w9, w10, w11 = Wt[k, f0 + uintp(8)], Wt[k, f0 + uintp(9)], Wt[k, f0 + uintp(10)], Wt[k, f0 + uintp(11)]
        w12, w13, w14, w15 = Wt[k, f0 + uintp(12)], Wt[k, f0 + uintp(13)], Wt[k, f0 + uintp(14)], Wt[k, f0 + uintp(15)]
        x = xp[s + uintp(0)]
        (a0_0, a0_1, a0_2, a0_3, a0_4, a0_5, a0_6, a0_7, a0_8, a0_9, a0_10, a0_11, a0_12, a0_13, a0_14, a0_15) = (
            a0_0 + w0 * x, a0_1 + w1 * x, a0_2 + w2 * x, a0_3 + w3 * x,
            a0_4 + w4 * x, a0_5 + w5 * x, a0_6 + w6 * x, a0_7 + w7 * x,
            a0_8 + w8 * x, a0_9 + w9 * x, a0_10 + w10 * x, a0_11 + w11 * x,
            a0_12 + w12 * x, a0_13 + w13 * x, a0_14 + w14 * x, a0_15 + w15 * x)
        x = xp[s + uintp(1)]
        (a1_0, a1_1, a1_2, a1_3, a1_4, a1_5, a1_6, a1_7, a1_8, a1_9, a1_10, a1_11, a1_12, a1_13, a1_14, a1_15) = (
            a1_0 + w0 * x, a1_1 + w1 * x, a1_2 + w2 * x, a1_3 + w3 * x,
            a1_4 + w4 * x, a1_5 + w5 * x, a1_6 + w6 * x, a1_7 + w7 * x,
            a1_8 + w8 * x, a1_9 + w9 * x, a1_10 + w10 * x, a1_11 + w11 * x,
            a1_12 + w12 * x, a1_13 + w13 * x, a1_14 + w14 * x, a1_15 + w15 * x)
        x = xp[s + uintp(2)]
        (a2_0, a2_1, a2_2, a2_3, a2_4, a2_5, a2_6, a2_7, a2_8, a2_9, a2_10, a2_11, a2_12, a2_13, a2_14, a2_15) = (
            a2_0 + w0 * x, a2_1 + w1 * x, a2_2 + w2 * x, a2_3 + w3 * x,
            a2_4 + w4 * x, a2_5 + w5 * x, a2_6 + w6 * x, a2_7 + w7 * x,
            a2_8 + w8 * x, a2_9 + w9 * x, a2_10 + w10 * x, a2_11 + w11 * x,
            a2_12 + w12 * x, a2_13 + w13 * x, a2_14 + w14 * x, a2_15 + w15 * x)
        x = xp[s + uintp(3)]
        (a3_0, a3_1, a3_2, a3_3, a3_4, a3_5, a3_6, a3_7, a3_8, a3_9, a3_10, a3_11, a3_12, a3_13, a3_14, a3_15) = (
            a3_0 + w0 * x, a3_1 + w1 * x, a3_2 + w2 * x, a3_3 + w3 * x,
            a3_4 + w4 * x, a3_5 + w5 * x, a3_6 + w6 * x, a3_7 + w7 * x,
            a3_8 + w8 * x, a3_9 + w9 * x, a3_10 + w10 * x, a3_11 + w11 * x,
            a3_12 + w12 * x, a3_13 + w13 * x, a3_14 + w14 * x, a3_15 + w15 * x)
    _store16(out, f0, o + uintp(0), a0_0, a0_1, a0_2, a0_3, a0_4, a0_5, a0_6, a0_7,
             a0_8, a0_9, a0_10, a0_11, a0_12, a0_13, a0_14, a0_15)
    _store16(out, f0, o + uintp(1), a1_0, a1_1, a1_2, a1_3, a1_4, a1_5, a1_6, a1_7,
             a1_8, a1_9, a1_10, a1_11, a1_12, a1_13, a1_14, a1_15)
    _store16(out, f0, o + uintp(2), a2_0, a2_1, a2_2, a2_3, a2_4, a2_5, a2_6, a2_7,
             a2_8, a2_9, a2_10, a2_11, a2_12, a2_13, a2_14, a2_15)
    _store16(out, f0, o + uintp(3), a3_0, a3_1, a3_2, a3_3, a3_4, a3_5, a3_6, a3_7,
             a3_8, a3_9, a3_10, a3_11, a3_12, a3_13, a3_14, a3_15)


@njit(inline="always", **JIT)
def _block_16x8(xp, Wt, offsets, base, f0, out, o, z):
    """As _block_16x4, for 8 pixels p = 0..7 and 512-bit registers: pixel p's 16 sums
    a{p}_0..a{p}_15 pack into one register, fed per tap by one vector load of the 16
    weights Wt[tap, f0:f0 + 16] and the input value xp[s + p] broadcast."""
    a0_0, a0_1, a0_2, a0_3, a0_4, a0_5, a0_6, a0_7 = z, z, z, z, z, z, z, z
    a0_8, a0_9, a0_10, a0_11, a0_12, a0_13, a0_14, a0_15 = z, z, z, z, z, z, z, z
    a1_0, a1_1, a1_2, a1_3, a1_4, a1_5, a1_6, a1_7 = z, z, z, z, z, z, z, z
    a1_8, a1_9, a1_10, a1_11, a1_12, a1_13, a1_14, a1_15 = z, z, z, z, z, z, z, z
    a2_0, a2_1, a2_2, a2_3, a2_4, a2_5, a2_6, a2_7 = z, z, z, z, z, z, z, z
    a2_8, a2_9, a2_10, a2_11, a2_12, a2_13, a2_14, a2_15 = z, z, z, z, z, z, z, z
    a3_0, a3_1, a3_2, a3_3, a3_4, a3_5, a3_6, a3_7 = z, z, z, z, z, z, z, z
    a3_8, a3_9, a3_10, a3_11, a3_12, a3_13, a3_14, a3_15 = z, z, z, z, z, z, z, z
    a4_0, a4_1, a4_2, a4_3, a4_4, a4_5, a4_6, a4_7 = z, z, z, z, z, z, z, z
    a4_8, a4_9, a4_10, a4_11, a4_12, a4_13, a4_14, a4_15 = z, z, z, z, z, z, z, z
    a5_0, a5_1, a5_2, a5_3, a5_4, a5_5, a5_6, a5_7 = z, z, z, z, z, z, z, z
    a5_8, a5_9, a5_10, a5_11, a5_12, a5_13, a5_14, a5_15 = z, z, z, z, z, z, z, z
    a6_0, a6_1, a6_2, a6_3, a6_4, a6_5, a6_6, a6_7 = z, z, z, z, z, z, z, z
    a6_8, a6_9, a6_10, a6_11, a6_12, a6_13, a6_14, a6_15 = z, z, z, z, z, z, z, z
    a7_0, a7_1, a7_2, a7_3, a7_4, a7_5, a7_6, a7_7 = z, z, z, z, z, z, z, z
    a7_8, a7_9, a7_10, a7_11, a7_12, a7_13, a7_14, a7_15 = z, z, z, z, z, z, z, z
    for k in range(uintp(offsets.shape[0])):      # every tap (c, i, j)
        s = base + uintp(offsets[k])
        w0, w1, w2, w3 = Wt[k, f0 + uintp(0)], Wt[k, f0 + uintp(1)], Wt[k, f0 + uintp(2)], Wt[k, f0 + uintp(3)]
        w4, w5, w6, w7 = Wt[k, f0 + uintp(4)], Wt[k, f0 + uintp(5)], Wt[k, f0 + uintp(6)], Wt[k, f0 + uintp(7)]
        w8, w9, w10, w11 = Wt[k, f0 + uintp(8)], Wt[k, f0 + uintp(9)], Wt[k, f0 + uintp(10)], Wt[k, f0 + uintp(11)]
        w12, w13, w14, w15 = Wt[k, f0 + uintp(12)], Wt[k, f0 + uintp(13)], Wt[k, f0 + uintp(14)], Wt[k, f0 + uintp(15)]
        x = xp[s + uintp(0)]
        (a0_0, a0_1, a0_2, a0_3, a0_4, a0_5, a0_6, a0_7, a0_8, a0_9, a0_10, a0_11, a0_12, a0_13, a0_14, a0_15) = (
            a0_0 + w0 * x, a0_1 + w1 * x, a0_2 + w2 * x, a0_3 + w3 * x,
            a0_4 + w4 * x, a0_5 + w5 * x, a0_6 + w6 * x, a0_7 + w7 * x,
            a0_8 + w8 * x, a0_9 + w9 * x, a0_10 + w10 * x, a0_11 + w11 * x,
            a0_12 + w12 * x, a0_13 + w13 * x, a0_14 + w14 * x, a0_15 + w15 * x)
        x = xp[s + uintp(1)]
        (a1_0, a1_1, a1_2, a1_3, a1_4, a1_5, a1_6, a1_7, a1_8, a1_9, a1_10, a1_11, a1_12, a1_13, a1_14, a1_15) = (
            a1_0 + w0 * x, a1_1 + w1 * x, a1_2 + w2 * x, a1_3 + w3 * x,
            a1_4 + w4 * x, a1_5 + w5 * x, a1_6 + w6 * x, a1_7 + w7 * x,
            a1_8 + w8 * x, a1_9 + w9 * x, a1_10 + w10 * x, a1_11 + w11 * x,
            a1_12 + w12 * x, a1_13 + w13 * x, a1_14 + w14 * x, a1_15 + w15 * x)
        x = xp[s + uintp(2)]
        (a2_0, a2_1, a2_2, a2_3, a2_4, a2_5, a2_6, a2_7, a2_8, a2_9, a2_10, a2_11, a2_12, a2_13, a2_14, a2_15) = (
            a2_0 + w0 * x, a2_1 + w1 * x, a2_2 + w2 * x, a2_3 + w3 * x,
            a2_4 + w4 * x, a2_5 + w5 * x, a2_6 + w6 * x, a2_7 + w7 * x,
            a2_8 + w8 * x, a2_9 + w9 * x, a2_10 + w10 * x, a2_11 + w11 * x,
            a2_12 + w12 * x, a2_13 + w13 * x, a2_14 + w14 * x, a2_15 + w15 * x)
        x = xp[s + uintp(3)]
        (a3_0, a3_1, a3_2, a3_3, a3_4, a3_5, a3_6, a3_7, a3_8, a3_9, a3_10, a3_11, a3_12, a3_13, a3_14, a3_15) = (
            a3_0 + w0 * x, a3_1 + w1 * x, a3_2 + w2 * x, a3_3 + w3 * x,
            a3_4 + w4 * x, a3_5 + w5 * x, a3_6 + w6 * x, a3_7 + w7 * x,
            a3_8 + w8 * x, a3_9 + w9 * x, a3_10 + w10 * x, a3_11 + w11 * x,
            a3_12 + w12 * x, a3_13 + w13 * x, a3_14 + w14 * x, a3_15 + w15 * x)
        x = xp[s + uintp(4)]
        (a4_0, a4_1, a4_2, a4_3, a4_4, a4_5, a4_6, a4_7, a4_8, a4_9, a4_10, a4_11, a4_12, a4_13, a4_14, a4_15) = (
            a4_0 + w0 * x, a4_1 + w1 * x, a4_2 + w2 * x, a4_3 + w3 * x,
            a4_4 + w4 * x, a4_5 + w5 * x, a4_6 + w6 * x, a4_7 + w7 * x,
            a4_8 + w8 * x, a4_9 + w9 * x, a4_10 + w10 * x, a4_11 + w11 * x,
            a4_12 + w12 * x, a4_13 + w13 * x, a4_14 + w14 * x, a4_15 + w15 * x)
        x = xp[s + uintp(5)]
        (a5_0, a5_1, a5_2, a5_3, a5_4, a5_5, a5_6, a5_7, a5_8, a5_9, a5_10, a5_11, a5_12, a5_13, a5_14, a5_15) = (
            a5_0 + w0 * x, a5_1 + w1 * x, a5_2 + w2 * x, a5_3 + w3 * x,
            a5_4 + w4 * x, a5_5 + w5 * x, a5_6 + w6 * x, a5_7 + w7 * x,
            a5_8 + w8 * x, a5_9 + w9 * x, a5_10 + w10 * x, a5_11 + w11 * x,
            a5_12 + w12 * x, a5_13 + w13 * x, a5_14 + w14 * x, a5_15 + w15 * x)
        x = xp[s + uintp(6)]
        (a6_0, a6_1, a6_2, a6_3, a6_4, a6_5, a6_6, a6_7, a6_8, a6_9, a6_10, a6_11, a6_12, a6_13, a6_14, a6_15) = (
            a6_0 + w0 * x, a6_1 + w1 * x, a6_2 + w2 * x, a6_3 + w3 * x,
            a6_4 + w4 * x, a6_5 + w5 * x, a6_6 + w6 * x, a6_7 + w7 * x,
            a6_8 + w8 * x, a6_9 + w9 * x, a6_10 + w10 * x, a6_11 + w11 * x,
            a6_12 + w12 * x, a6_13 + w13 * x, a6_14 + w14 * x, a6_15 + w15 * x)
        x = xp[s + uintp(7)]
        (a7_0, a7_1, a7_2, a7_3, a7_4, a7_5, a7_6, a7_7, a7_8, a7_9, a7_10, a7_11, a7_12, a7_13, a7_14, a7_15) = (
            a7_0 + w0 * x, a7_1 + w1 * x, a7_2 + w2 * x, a7_3 + w3 * x,
            a7_4 + w4 * x, a7_5 + w5 * x, a7_6 + w6 * x, a7_7 + w7 * x,
            a7_8 + w8 * x, a7_9 + w9 * x, a7_10 + w10 * x, a7_11 + w11 * x,
            a7_12 + w12 * x, a7_13 + w13 * x, a7_14 + w14 * x, a7_15 + w15 * x)
    _store16(out, f0, o + uintp(0), a0_0, a0_1, a0_2, a0_3, a0_4, a0_5, a0_6, a0_7,
             a0_8, a0_9, a0_10, a0_11, a0_12, a0_13, a0_14, a0_15)
    _store16(out, f0, o + uintp(1), a1_0, a1_1, a1_2, a1_3, a1_4, a1_5, a1_6, a1_7,
             a1_8, a1_9, a1_10, a1_11, a1_12, a1_13, a1_14, a1_15)
    _store16(out, f0, o + uintp(2), a2_0, a2_1, a2_2, a2_3, a2_4, a2_5, a2_6, a2_7,
             a2_8, a2_9, a2_10, a2_11, a2_12, a2_13, a2_14, a2_15)
    _store16(out, f0, o + uintp(3), a3_0, a3_1, a3_2, a3_3, a3_4, a3_5, a3_6, a3_7,
             a3_8, a3_9, a3_10, a3_11, a3_12, a3_13, a3_14, a3_15)
    _store16(out, f0, o + uintp(4), a4_0, a4_1, a4_2, a4_3, a4_4, a4_5, a4_6, a4_7,
             a4_8, a4_9, a4_10, a4_11, a4_12, a4_13, a4_14, a4_15)
    _store16(out, f0, o + uintp(5), a5_0, a5_1, a5_2, a5_3, a5_4, a5_5, a5_6, a5_7,
             a5_8, a5_9, a5_10, a5_11, a5_12, a5_13, a5_14, a5_15)
    _store16(out, f0, o + uintp(6), a6_0, a6_1, a6_2, a6_3, a6_4, a6_5, a6_6, a6_7,
             a6_8, a6_9, a6_10, a6_11, a6_12, a6_13, a6_14, a6_15)
    _store16(out, f0, o + uintp(7), a7_0, a7_1, a7_2, a7_3, a7_4, a7_5, a7_6, a7_7,
             a7_8, a7_9, a7_10, a7_11, a7_12, a7_13, a7_14, a7_15)


@njit(inline="always", **JIT)
def _store16(out, f0, o, a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15):
    """out[f0 + k, o] = a_k, k = 0..15: one pixel's 16 channels."""
    out[f0 + uintp(0), o], out[f0 + uintp(1), o], out[f0 + uintp(2), o], out[f0 + uintp(3), o] = a0, a1, a2, a3
    out[f0 + uintp(4), o], out[f0 + uintp(5), o], out[f0 + uintp(6), o], out[f0 + uintp(7), o] = a4, a5, a6, a7
    out[f0 + uintp(8), o], out[f0 + uintp(9), o], out[f0 + uintp(10), o], out[f0 + uintp(11), o] = a8, a9, a10, a11
    out[f0 + uintp(12), o], out[f0 + uintp(13), o], out[f0 + uintp(14), o], out[f0 + uintp(15), o] = a12, a13, a14, a15


# (Only the one in use is compiled. Two functions, not one written for both: they differ in
# the register footprint of one machine each, and a shared helper on 16-tuples made LLVM
# shuffle lanes in the loop and ran slower, session 17.)
_block = _block_16x8 if WIDE else _block_16x4
