/* Integrate-and-fire recurrence and its BPTT backward, one pass over memory each.
 *
 * The torch implementation in bptt.py runs a dozen elementwise operations per time step,
 * each a full pass over a [B, ...] slice. These two functions do the same arithmetic per
 * neuron with the potential kept in a register: the forward pass reads each input once and
 * writes each spike once; the backward pass replays the potentials of a block of neurons
 * into a small buffer and runs the reverse-time recursion on it.
 *
 * Both work on the n neurons of a step in blocks spread over the OpenMP threads when compiled with OpenMP (loaded into torch, they share torch's threads and
 * its thread count). Arrays are float32 and contiguous: x and membrane are [T, n] (x is
 * [n] when static, i.e. the same input at every step), theta and v0 are [n] or a scalar
 * (theta_full / v0_full = 0), pattern is [T, n] bytes (0/1). The operations and their order
 * are those of bptt.py, so results agree with it to rounding.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#define BLOCK 256
#define MIN_PARALLEL_BLOCKS 32
#define PI 3.14159265358979323846

enum { TRIANGLE, RECT, EXP, SIGMOID, ARCTAN, GAUSSIAN, STE };
enum { ADAPTIVE_ATAN = 16, ADAPTIVE_RECT, ADAPTIVE_TRIANGLE, ADAPTIVE_SIGMOID, ADAPTIVE_GAUSSIAN };

/* ASSG: the shape's derivative with a sharpness a[i] per element (unit mass each). */
static void adaptive_surrogate(int kind, const float *a, const float *u, float *out,
                               int64_t len) {
    int64_t i;
    switch (kind) {
    case ADAPTIVE_ATAN:
        for (i = 0; i < len; i++) {
            float z = (float)(PI / 2.0) * a[i] * u[i];
            out[i] = (a[i] / 2.0f) / (1.0f + z * z);
        }
        break;
    case ADAPTIVE_RECT:
        for (i = 0; i < len; i++) out[i] = fabsf(u[i]) < 1.0f / a[i] ? a[i] / 2.0f : 0.0f;
        break;
    case ADAPTIVE_TRIANGLE:
        for (i = 0; i < len; i++) {
            float r = 1.0f - a[i] * fabsf(u[i]);
            out[i] = a[i] * (r > 0.0f ? r : 0.0f);
        }
        break;
    case ADAPTIVE_SIGMOID:
        for (i = 0; i < len; i++) {
            float s = 1.0f / (1.0f + expf(-a[i] * u[i]));
            out[i] = a[i] * s * (1.0f - s);
        }
        break;
    default:
        for (i = 0; i < len; i++) {
            float z = a[i] * u[i];
            out[i] = a[i] / (float)sqrt(2.0 * PI) * expf(-(z * z) / 2.0f);
        }
    }
}

static void surrogate(int kind, float p0, float p1, const float *u, float *out, int64_t len) {
    int64_t i;
    switch (kind) {
    case TRIANGLE:
        for (i = 0; i < len; i++) {
            float a = p0 - fabsf(u[i]);
            out[i] = (a > 0.0f ? a : 0.0f) / (p0 * p0);
        }
        break;
    case RECT:
        for (i = 0; i < len; i++) out[i] = fabsf(u[i]) < p0 / 2.0f ? 1.0f / p0 : 0.0f;
        break;
    case EXP:
        for (i = 0; i < len; i++) out[i] = p0 * expf(-p1 * fabsf(u[i]));
        break;
    case SIGMOID:
        for (i = 0; i < len; i++) {
            float s = 1.0f / (1.0f + expf(-p0 * u[i]));
            out[i] = p0 * s * (1.0f - s);
        }
        break;
    case ARCTAN:
        for (i = 0; i < len; i++) {
            float z = (float)(PI / 2.0) * p0 * u[i];
            out[i] = (p0 / 2.0f) / (1.0f + z * z);
        }
        break;
    case GAUSSIAN:
        for (i = 0; i < len; i++)
            out[i] = expf(-(u[i] * u[i]) / (2.0f * p0 * p0)) / ((float)sqrt(2.0 * PI) * p0);
        break;
    default:
        for (i = 0; i < len; i++) out[i] = 1.0f;
    }
}

/* One step for a block: m = x + leak·v; s = [m ≥ θ] (or m > θ); v = m - s·(θ or m). */
static void step_block(const float *x, float *v, const float *th, float leak, int soft_reset,
                       int strict, float *m, float *s, int64_t len) {
    for (int64_t i = 0; i < len; i++) {
        float p = x[i] + leak * v[i];
        float fired = (float)((p > th[i]) | (!strict & (p == th[i])));
        v[i] = p - fired * (soft_reset ? th[i] : p);
        m[i] = p;
        s[i] = fired;
    }
}

void if_forward(int64_t steps, int64_t n, const float *x,
                int static_input, const float *theta, int theta_full, const float *v0,
                int v0_full, float leak, int soft_reset, int strict, int amplitude_is_theta,
                float *out, float *membrane, uint8_t *pattern, float *final_v) {
    int64_t blocks = (n + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(static) if (blocks > MIN_PARALLEL_BLOCKS)
    for (int64_t b = 0; b < blocks; b++) {
        float v[BLOCK], th[BLOCK], amp[BLOCK], m[BLOCK], s[BLOCK];
        int64_t c0 = b * BLOCK, len = n - c0 < BLOCK ? n - c0 : BLOCK, i;
        for (i = 0; i < len; i++) {
            v[i] = v0_full ? v0[c0 + i] : v0[0];
            th[i] = theta_full ? theta[c0 + i] : theta[0];
            amp[i] = amplitude_is_theta ? th[i] : 1.0f;
        }
        for (int64_t t = 0; t < steps; t++) {
            const float *xt = static_input ? x + c0 : x + t * n + c0;
            float *ot = out + t * n + c0;
            step_block(xt, v, th, leak, soft_reset, strict, m, s, len);
            for (i = 0; i < len; i++) ot[i] = s[i] * amp[i];
            if (membrane)
                for (i = 0; i < len; i++) membrane[t * n + c0 + i] = m[i];
            if (pattern)
                for (i = 0; i < len; i++) pattern[t * n + c0 + i] = (uint8_t)s[i];
        }
        for (i = 0; i < len; i++) final_v[c0 + i] = v[i];
    }
}

/* source_kind 0: source is the membrane [T, n] of the forward pass; 1: source is its input
 * (static or [T, n]) and the potentials are replayed, with the forward's firing pattern when
 * one is given. grad_x is [T, n], or [n] summed over steps when static; it may be the same
 * array as a [T, n] source. grad_theta and grad_v0 ([n], per neuron) may be NULL. With
 * detach_reset the spike in the reset counts as a constant (no term through the surrogate).
 * sharpness ([T, n], or NULL) is ASSG's per-element sharpness for the ADAPTIVE_* kinds.
 * Returns 0, or -1 when a buffer could not be allocated. */
int if_backward(int64_t steps, int64_t n, const float *source,
                int source_kind, int static_input, const uint8_t *pattern, const float *theta,
                int theta_full, const float *v0, int v0_full, float leak, int soft_reset,
                int strict, int amplitude_is_theta, int detach_reset, int kind, float p0,
                float p1, const float *sharpness, const float *grad_out, float *grad_x,
                float *grad_theta, float *grad_v0) {
    const float soft = soft_reset ? 1.0f : 0.0f, amplitude = amplitude_is_theta ? 1.0f : 0.0f;
    int64_t blocks = (n + BLOCK - 1) / BLOCK;
    int failed = 0;
#pragma omp parallel reduction(| : failed) if (blocks > MIN_PARALLEL_BLOCKS)
    {
    float *potential = malloc(sizeof(float) * steps * BLOCK);
    float *fired = malloc(sizeof(float) * steps * BLOCK);
    float th[BLOCK], dm[BLOCK], sg[BLOCK], total[BLOCK], gtheta[BLOCK], v[BLOCK];
#pragma omp for schedule(static)
    for (int64_t b = 0; b < blocks; b++) {
        int64_t c0 = b * BLOCK, len = n - c0 < BLOCK ? n - c0 : BLOCK, i, t;
        if (!potential || !fired) {
            failed = 1;
            continue;
        }
        for (i = 0; i < len; i++) {
            th[i] = theta_full ? theta[c0 + i] : theta[0];
            v[i] = v0_full ? v0[c0 + i] : v0[0];
            dm[i] = total[i] = gtheta[i] = 0.0f;
        }
        for (t = 0; t < steps; t++) {
            float *m = potential + t * BLOCK, *s = fired + t * BLOCK;
            if (source_kind == 0) {
                const float *mt = source + t * n + c0;
                for (i = 0; i < len; i++) {
                    m[i] = mt[i];
                    s[i] = (float)((mt[i] > th[i]) | (!strict & (mt[i] == th[i])));
                }
            } else {
                const float *xt = static_input ? source + c0 : source + t * n + c0;
                step_block(xt, v, th, leak, soft_reset, strict, m, s, len);
            }
            if (pattern) {  /* the forward's spikes, should a replay round differently */
                const uint8_t *pt = pattern + t * n + c0;
                for (i = 0; i < len; i++) s[i] = (float)pt[i];
                if (source_kind != 0)
                    for (i = 0; i < len; i++) v[i] = m[i] - s[i] * (soft_reset ? th[i] : m[i]);
            }
        }
        /* dm is dL/dm of the step after t (0 after the last step): dv = leak·dm flows back
         * through the reset, v = m - s·(θ or m), and into the spike through the surrogate */
        for (t = steps - 1; t >= 0; t--) {
            const float *m = potential + t * BLOCK, *s = fired + t * BLOCK;
            const float *go = grad_out + t * n + c0;
            for (i = 0; i < len; i++) sg[i] = m[i] - th[i];
            if (sharpness)
                adaptive_surrogate(kind, sharpness + t * n + c0, sg, sg, len);
            else
                surrogate(kind, p0, p1, sg, sg, len);
            for (i = 0; i < len; i++) {
                float g = go[i] * (amplitude_is_theta ? th[i] : 1.0f);
                float dv = dm[i] * leak;
                float g_spike = detach_reset ? g : g - dv * (soft_reset ? th[i] : m[i]);
                float d = (dv - dv * s[i] * (1.0f - soft)) + g_spike * sg[i];
                gtheta[i] += amplitude * go[i] * s[i] - g_spike * sg[i] - soft * dv * s[i];
                dm[i] = d;
                total[i] += d;
            }
            if (!static_input)
                for (i = 0; i < len; i++) grad_x[t * n + c0 + i] = dm[i];
        }
        if (static_input)
            for (i = 0; i < len; i++) grad_x[c0 + i] = total[i];
        if (grad_theta)
            for (i = 0; i < len; i++) grad_theta[c0 + i] = gtheta[i];
        if (grad_v0)
            for (i = 0; i < len; i++) grad_v0[c0 + i] = dm[i] * leak;
    }
    free(potential);
    free(fired);
    }
    return failed ? -1 : 0;
}

/* Average pooling (kernel = stride, no padding) of spikes given by their firing pattern:
 * out = Σ_window (s·a) / (kh·kw), each window summed row by row as torch's CPU kernel sums
 * it, so that the result equals pooling the float spikes. There are `planes`
 * planes of [H, W]; the amplitude a is amplitude[plane % channels] (channels = 0: amplitude 1).
 * Returns 0, or -1 when a buffer could not be allocated. */
int pool_spikes(int64_t planes, const uint8_t *pattern, int64_t height,
                int64_t width, int64_t kh, int64_t kw, const float *amplitude, int64_t channels,
                float *out) {
    int64_t out_h = height / kh, out_w = width / kw;
    float divisor = (float)(kh * kw);
    int failed = 0;
#pragma omp parallel reduction(| : failed) if (planes * height * width > 8192 * 16)
    {
    float *sum = malloc(sizeof(float) * (out_w > 0 ? out_w : 1));
#pragma omp for schedule(static)
    for (int64_t p = 0; p < planes; p++) {
        if (!sum) {
            failed = 1;
            continue;
        }
        float a = channels ? amplitude[p % channels] : 1.0f;
        const uint8_t *plane = pattern + p * height * width;
        float *o = out + p * out_h * out_w;
        for (int64_t oh = 0; oh < out_h; oh++) {
            int64_t ow;
            for (ow = 0; ow < out_w; ow++) sum[ow] = 0.0f;
            for (int64_t i = oh * kh; i < oh * kh + kh; i++) {
                const uint8_t *row = plane + i * width;
                for (int64_t j = 0; j < kw; j++)
                    for (ow = 0; ow < out_w; ow++)
                        sum[ow] += (float)row[ow * kw + j] * a;
            }
            for (ow = 0; ow < out_w; ow++) o[oh * out_w + ow] = sum[ow] / divisor;
        }
    }
    free(sum);
    }
    return failed ? -1 : 0;
}
