/* Helper functions the generated code may call; the generator copies only those it uses
 * (a static function nobody calls would fail -Wunused-function under -Werror).
 * Each section starts with a line "@@ name". */
@@ inline
/* Inline a small helper into every caller, even in an -Os build (a call would cost more than it). */
#if defined(__GNUC__)
#define LL_INLINE static inline __attribute__((always_inline))
#else
#define LL_INLINE static inline
#endif
@@ noinline
/* Keep a function out of line: GCC 12 at -O2 vectorizes the 16 accumulators of a conv block
 * only in a function of its own (measured: about 15% faster overall for seed650). */
#if defined(__GNUC__)
#define LL_NOINLINE __attribute__((noinline))
#else
#define LL_NOINLINE
#endif
@@ noipa
/* A step function that several steps call (one body for equal copies, remaps and merges): no
 * interprocedural constant propagation into it. GCC 12.2 at -O2 (-fipa-cp) dropped every call of
 * such a function when all of them passed the same buffer addresses (a remap of 2 x 2 x 432
 * called twice wrote nothing); layerlab's self-check caught it. */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 8
#define LL_NOIPA __attribute__((noipa))
#else
#define LL_NOIPA
#endif
@@ hot
/* The inner loops of int8 convolutions and dense layers: -O2 even in an -Os build (GCC keeps
 * their accumulators in registers only at -O2: measured 2.4 instead of 4.1 instructions per MAC
 * on ResNet-8), at a few hundred bytes of flash each. */
#if defined(__GNUC__) && !defined(__clang__)
#define LL_HOT __attribute__((optimize("O2")))
#else
#define LL_HOT
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
/* bytes 1 and 3 of v, sign-extended to a 16-bit pair: SXTB16 with its own rotation (one instruction) */
LL_INLINE int16x2_t ll_sxtb16_odd(uint32_t v)
{
    int16x2_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v));
    return r;
}
/* Both halves of a 16-bit pair minus the input's zero point (SSUB16; nothing when it is 0). */
LL_INLINE int16x2_t ll_minus_zero(int16x2_t v, int32_t zero)
{
    return zero ? __ssub16(v, (int16x2_t)((uint32_t)(uint16_t)zero * 0x10001u)) : v;
}
/* Four channels of one depthwise tap: a[k] += (x[k] - zero) * w[k] for k = 0..3, channels side by
 * side. One word of each, sign-extended to pairs (channels 0, 2 and 1, 3), then SMLABB / SMLATT. */
LL_INLINE void ll_depthwise4(const int8_t *x, const int8_t *w, int32_t zero, int32_t *a)
{
    uint32_t xv, wv;
    memcpy(&xv, x, 4);
    memcpy(&wv, w, 4);
    {
        const int16x2_t x_even = ll_minus_zero(__sxtb16(xv), zero), x_odd = ll_minus_zero(ll_sxtb16_odd(xv), zero);
        const int16x2_t w_even = __sxtb16(wv), w_odd = ll_sxtb16_odd(wv);
        a[0] = __smlabb(x_even, w_even, a[0]);
        a[1] = __smlabb(x_odd, w_odd, a[1]);
        a[2] = __smlatt(x_even, w_even, a[2]);
        a[3] = __smlatt(x_odd, w_odd, a[3]);
    }
}
#else
#define LL_DSP 0
#endif
@@ dot_x2
/* acc0 += (x - zero) . w0 and acc1 += (x - zero) . w1 over n int8 values: four a step with SMLAD
 * where the DSP extension is (LL_DSP), one a step otherwise and for the rest. */
LL_INLINE void ll_dot_x2(const int8_t *x, const int8_t *w0, const int8_t *w1, int n, int32_t zero, int32_t *acc0, int32_t *acc1)
{
    int32_t a0 = *acc0, a1 = *acc1;
    int i = 0;
#if LL_DSP
    for (; i + 4 <= n; i += 4) {
        uint32_t xv, a, b;
        memcpy(&xv, x + i, 4);
        memcpy(&a, w0 + i, 4);
        memcpy(&b, w1 + i, 4);
        {
            const int16x2_t x_even = ll_minus_zero(__sxtb16(xv), zero), x_odd = ll_minus_zero(ll_sxtb16_odd(xv), zero);
            a0 = __smlad(x_odd, ll_sxtb16_odd(a), __smlad(x_even, __sxtb16(a), a0));
            a1 = __smlad(x_odd, ll_sxtb16_odd(b), __smlad(x_even, __sxtb16(b), a1));
        }
    }
#endif
    for (; i < n; ++i) {
        a0 += ((int32_t)x[i] - zero) * w0[i];
        a1 += ((int32_t)x[i] - zero) * w1[i];
    }
    *acc0 = a0;
    *acc1 = a1;
}
@@ dot_2x2
/* Two positions x0, x1 against two filter rows w0, w1 over n int8 values, the inputs less their
 * zero point: acc[0] += x0.w0, acc[1] += x0.w1, acc[2] += x1.w0, acc[3] += x1.w1 (each word of
 * weights extended once for both positions). */
LL_INLINE void ll_dot_2x2(const int8_t *x0, const int8_t *x1, const int8_t *w0, const int8_t *w1, int n, int32_t zero, int32_t *acc)
{
    int32_t a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
    int i = 0;
#if LL_DSP
    for (; i + 4 <= n; i += 4) {
        uint32_t p, q, a, b;
        memcpy(&p, x0 + i, 4);
        memcpy(&q, x1 + i, 4);
        memcpy(&a, w0 + i, 4);
        memcpy(&b, w1 + i, 4);
        {
            const int16x2_t a_even = __sxtb16(a), a_odd = ll_sxtb16_odd(a), b_even = __sxtb16(b), b_odd = ll_sxtb16_odd(b);
            const int16x2_t p_even = ll_minus_zero(__sxtb16(p), zero), p_odd = ll_minus_zero(ll_sxtb16_odd(p), zero);
            const int16x2_t q_even = ll_minus_zero(__sxtb16(q), zero), q_odd = ll_minus_zero(ll_sxtb16_odd(q), zero);
            a0 = __smlad(p_odd, a_odd, __smlad(p_even, a_even, a0));
            a1 = __smlad(p_odd, b_odd, __smlad(p_even, b_even, a1));
            a2 = __smlad(q_odd, a_odd, __smlad(q_even, a_even, a2));
            a3 = __smlad(q_odd, b_odd, __smlad(q_even, b_even, a3));
        }
    }
#endif
    for (; i < n; ++i) {
        a0 += ((int32_t)x0[i] - zero) * w0[i];
        a1 += ((int32_t)x0[i] - zero) * w1[i];
        a2 += ((int32_t)x1[i] - zero) * w0[i];
        a3 += ((int32_t)x1[i] - zero) * w1[i];
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
}
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

/* acc * multiplier / 2^shift rounded half up, plus the output's zero point, saturated to
 * [low, 127]: the fixed-point form of acc * real_scale + zero with multiplier in [2^30, 2^31) and
 * 1 <= shift <= 62 (low: -128, or the zero point for a ReLU). */
LL_INLINE int32_t ll_requantize(int32_t acc, int32_t multiplier, int shift, int32_t zero, int32_t low)
{
    const int64_t product = (int64_t)acc * multiplier;
    int32_t scaled;
    if (shift >= 32) {
        /* The usual case (a scale below 1): only the high word of the product matters, and a 32-bit
         * shift of it gives the same floor((product + 2^(shift-1)) / 2^shift) as the 64-bit form
         * (no library call for a variable 64-bit shift on a 32-bit core). |high| < 2^30. */
        const int32_t high = (int32_t)(product >> 32);
        if (shift == 32) {
            scaled = high + (int32_t)((uint32_t)product >> 31);
        } else {
            scaled = (high + ((int32_t)1 << (shift - 33))) >> (shift - 32);
        }
    } else if (shift == 31) {  /* a scale in [0.5, 1): twice the high word, plus what the low word carries */
        const uint32_t low_word = (uint32_t)product, sum = low_word + 0x40000000u;
        scaled = 2 * (int32_t)(product >> 32) + (int32_t)(sum >> 31) + 2 * (int32_t)(sum < low_word);
    } else {
        const int64_t wide = (product + ((int64_t)1 << (shift - 1))) >> shift;
        scaled = wide > 256 ? 256 : wide < -256 ? -256 : (int32_t)wide;
    }
    scaled += zero;
    return scaled > 127 ? 127 : scaled < low ? low : scaled;
}
@@ requantize_high
/* ll_requantize for a shift of 33 or more (a scale below 1/2, the usual case), given as
 * high_shift = shift - 32: the product's high word, rounded and shifted in 32 bits, with no branch
 * on the shift; the same result as the 64-bit form. */
LL_INLINE int32_t ll_requantize_high(int32_t acc, int32_t multiplier, int high_shift, int32_t zero, int32_t low)
{
    const int32_t high = (int32_t)(((int64_t)acc * multiplier) >> 32);
    const int32_t scaled = ((high + ((int32_t)1 << (high_shift - 1))) >> high_shift) + zero;
    return scaled > 127 ? 127 : scaled < low ? low : scaled;
}
@@ divide_round
/* sum / count rounded half away from zero (count > 0), as TFLite's integer average pool. */
static int32_t ll_divide_round(int32_t sum, int32_t count)
{
    return sum >= 0 ? (sum + count / 2) / count : -((-sum + count / 2) / count);
}
@@ quantize
/* round(x) half away from zero, plus the zero point, saturated to [-128, 127] (NaN gives 127). */
static int32_t ll_quantize(float x, int32_t zero)
{
    int32_t q;
    x = x < 383.0f ? x : 383.0f;
    x = x > -383.0f ? x : -383.0f;
    q = (int32_t)(x >= 0.0f ? x + 0.5f : x - 0.5f) + zero;
    return q > 127 ? 127 : q < -128 ? -128 : q;
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
