/* Helper functions the generated code may call; the generator copies only those it uses
 * (a static function nobody calls would fail -Wunused-function under -Werror).
 * Each section starts with a line "@@ name". */
@@ noinline
/* Keep a function out of line: GCC 12 at -O2 vectorizes the 16 accumulators of a conv block
 * only in a function of its own (measured: about 15% faster overall for seed650). */
#if defined(__GNUC__)
#define LL_NOINLINE __attribute__((noinline))
#else
#define LL_NOINLINE
#endif
@@ dot_dsp
/* Cortex-M DSP extension (ARMv7E-M: M4, M7, M33 with DSP): SMLAD multiplies two pairs of 16-bit
 * values and adds both products to an accumulator in one instruction, as CMSIS-NN does. Four int8
 * values are read as one word; SXTB16 sign-extends bytes 0 and 2 (and, rotated by 8, bytes 1 and 3)
 * into 16-bit pairs. Chosen at compile time (__ARM_FEATURE_DSP); -DLAYERLAB_NO_DSP, or any other
 * target, builds the portable loop instead. Both give the same int32 sums (integer arithmetic). */
#if defined(__ARM_FEATURE_DSP) && !defined(LAYERLAB_NO_DSP)
#include <arm_acle.h>
#include <string.h>
#define LL_DSP 1
/* acc0 += x[0..3] . w0[0..3] and acc1 += x[0..3] . w1[0..3]: the input is extended once for both rows. */
static inline void ll_dot4x2(const int8_t *x, const int8_t *w0, const int8_t *w1, int32_t *acc0, int32_t *acc1)
{
    uint32_t xv, a, b;
    memcpy(&xv, x, 4);
    memcpy(&a, w0, 4);
    memcpy(&b, w1, 4);
    {
        const int16x2_t x_even = __sxtb16(xv), x_odd = __sxtb16((xv >> 8) | (xv << 24));
        *acc0 = __smlad(x_even, __sxtb16(a), *acc0);
        *acc0 = __smlad(x_odd, __sxtb16((a >> 8) | (a << 24)), *acc0);
        *acc1 = __smlad(x_even, __sxtb16(b), *acc1);
        *acc1 = __smlad(x_odd, __sxtb16((b >> 8) | (b << 24)), *acc1);
    }
}
#else
#define LL_DSP 0
#endif
@@ tap_begin
/* First tap t of a window starting at in0 (t * dilation from it) that lies at or after 0. */
static int ll_tap_begin(int in0, int dilation)
{
    return in0 >= 0 ? 0 : (-in0 + dilation - 1) / dilation;
}
@@ tap_end
/* One past the last tap t (t < taps) whose cell in0 + t * dilation lies before size. */
static int ll_tap_end(int in0, int size, int dilation, int taps)
{
    const int left = size - in0;
    const int end = left <= 0 ? 0 : (left + dilation - 1) / dilation;
    return end < taps ? end : taps;
}
@@ tanh_clamped
/* tanh(x) for |x| <= 9 as x * P(x^2) / Q(x^2), a degree (4, 4) rational minimax fit on [0, 9]
 * made for layerlab; beyond |x| = 9, tanh rounds to +-1 in float32, so callers clamp first.
 * Absolute error below 4e-7 in float32 arithmetic (measured against tanh in float64). No libm
 * call and no branch: several times faster than tanhf in glibc and newlib, and loops of it
 * vectorize. */
static float ll_tanh_clamped(float x)
{
    const float s = x * x;
    const float p = (((1.31840405e-08f * s + 2.04717071e-05f) * s + 0.00348657509f) * s + 0.133731917f) * s + 0.999999881f;
    const float q = (((7.70259021e-07f * s + 0.000327137357f) * s + 0.0258419532f) * s + 0.467064887f) * s + 1.0f;
    return x * p / q;
}
@@ tanh
/* tanh(x) for any x: clamp, then the rational form above. */
static float ll_tanh(float x)
{
    return ll_tanh_clamped(x > 9.0f ? 9.0f : (x < -9.0f ? -9.0f : x));
}
@@ sigmoid
/* 1 / (1 + exp(-x)), written so that exp never overflows (as layerlab's engine). */
static float ll_sigmoid(float x)
{
    const float e = expf(-fabsf(x));
    return x >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
}
@@ softmax
/* exp(x - max) / sum(exp(x - max)) over n values stride apart; output may equal input. */
static void ll_softmax(const float *input, float *output, int n, int stride)
{
    float max = input[0];
    float sum = 0.0f;
    int k;
    for (k = 1; k < n; ++k) {
        if (input[k * stride] > max) {
            max = input[k * stride];
        }
    }
    for (k = 0; k < n; ++k) {
        const float e = expf(input[k * stride] - max);
        output[k * stride] = e;
        sum += e;
    }
    for (k = 0; k < n; ++k) {
        output[k * stride] /= sum;
    }
}
@@ requantize
/* Rounding right shift used by ll_requantize: this code assumes >> on a negative int64_t is
 * arithmetic (floor), as on GCC, Clang, Arm and Xtensa compilers; the array below fails to
 * compile where it is not. */
typedef char ll_arithmetic_shift_check[((int64_t)-3 >> 1) == -2 ? 1 : -1];

/* acc * multiplier / 2^shift rounded half up, saturated to [low, 127]: the fixed-point form
 * of acc * real_scale with multiplier in [2^30, 2^31) and 1 <= shift <= 62. */
static int32_t ll_requantize(int32_t acc, int32_t multiplier, int shift, int32_t low)
{
    const int64_t product = (int64_t)acc * multiplier;
    const int64_t scaled = (product + ((int64_t)1 << (shift - 1))) >> shift;
    return scaled > 127 ? 127 : scaled < low ? low : (int32_t)scaled;
}
@@ divide_round
/* sum / count rounded half away from zero (count > 0), as TFLite's integer average pool. */
static int32_t ll_divide_round(int32_t sum, int32_t count)
{
    return sum >= 0 ? (sum + count / 2) / count : -((-sum + count / 2) / count);
}
@@ quantize
/* round(x) half away from zero, saturated to [-128, 127] (NaN gives 127). */
static int32_t ll_quantize(float x)
{
    x = x < 127.0f ? x : 127.0f;
    x = x > -128.0f ? x : -128.0f;
    return (int32_t)(x >= 0.0f ? x + 0.5f : x - 0.5f);
}
@@ maximum
/* Keras' Maximum (ops.maximum) of two values. */
static float ll_maximum(float a, float b)
{
    return a > b ? a : b;
}

@@ minimum
/* Keras' Minimum (ops.minimum) of two values. */
static float ll_minimum(float a, float b)
{
    return a < b ? a : b;
}

@@ clamp8
/* value saturated to int8's range. */
static int32_t ll_clamp8(int32_t value)
{
    return value < -128 ? -128 : (value > 127 ? 127 : value);
}
