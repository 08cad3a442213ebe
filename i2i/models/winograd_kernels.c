/* The transforms of Winograd F(4x4, 3x3) for i2i/models/winograd.py (fp32, NCHW, contiguous),
 * compiled on first use by i2i/models/kernels.py. The products between them stay PyTorch's bmm.
 *
 * Layouts: x [N, C, Hp, Wp] (already padded), y [N, Co, 4 nh, 4 nw] with nh = (Hp - 2) / 4;
 * the transformed tiles V [36, C, P] and M [36, Co, P] have P = N nh nw tiles per channel,
 * ordered (n, th, tw), contiguous: the 36 positions are C P (or Co P) floats apart (36 batched
 * matrix products).
 * Tiles are transformed in blocks of TB, gathered into a [36][TB] buffer, with loops over the
 * block that the compiler vectorises. The 36 rows of V and M are read and written through a
 * [36][CH] buffer, CH tiles (or filters) at a time, as runs of contiguous floats: rows written
 * a block at a time straight into V, which are 4 C P bytes apart, share a few cache sets; that
 * ran each transform 1.5x-3.6x slower at 8x64x16x16 and 2.2x-7x at 1x256x64x64
 * (benchmarks/winograd_steps.py on the 2-core EPYC, before and after).
 * Work is shared out by OpenMP (PyTorch's own runtime, so its thread count applies).
 */
#include <stdint.h>
#include <string.h>

#define TB 16
#define CH 128
#define RESTRICT __restrict__

/* The 36 rows of a chunk between V (rows `ks` floats apart) and a [36][CH] buffer. */
static inline void rows_out(const float *RESTRICT buf, float *RESTRICT V, int64_t ks, int64_t len) {
    for (int k = 0; k < 36; k++) memcpy(V + k * ks, buf + k * CH, len * sizeof(float));
}
static inline void rows_in(const float *RESTRICT V, int64_t ks, float *RESTRICT buf, int64_t len) {
    for (int k = 0; k < 36; k++) memcpy(buf + k * CH, V + k * ks, len * sizeof(float));
}

/* Each function applies a 1-D transform to `n` lanes: input k of lane q is in[k * is + q],
 * output k goes to out[k * os + q]. */
static inline void bt6(const float *RESTRICT in, int64_t is, float *RESTRICT out, int64_t os, int64_t n) {
    for (int64_t q = 0; q < n; q++) { /* out = B^T in, 6 -> 6 */
        float d0 = in[q], d1 = in[is + q], d2 = in[2 * is + q], d3 = in[3 * is + q], d4 = in[4 * is + q],
              d5 = in[5 * is + q];
        out[q] = 4.f * d0 - 5.f * d2 + d4;
        out[os + q] = -4.f * (d1 + d2) + d3 + d4;
        out[2 * os + q] = 4.f * (d1 - d2) - d3 + d4;
        out[3 * os + q] = 2.f * (d3 - d1) - d2 + d4;
        out[4 * os + q] = 2.f * (d1 - d3) - d2 + d4;
        out[5 * os + q] = 4.f * d1 - 5.f * d3 + d5;
    }
}
static inline void b6(const float *RESTRICT in, int64_t is, float *RESTRICT out, int64_t os, int64_t n) {
    for (int64_t q = 0; q < n; q++) { /* out = B in, 6 -> 6: the adjoint of bt6 */
        float v0 = in[q], v1 = in[is + q], v2 = in[2 * is + q], v3 = in[3 * is + q], v4 = in[4 * is + q],
              v5 = in[5 * is + q];
        out[q] = 4.f * v0;
        out[os + q] = 4.f * (v2 - v1 + v5) + 2.f * (v4 - v3);
        out[2 * os + q] = -5.f * v0 - 4.f * (v1 + v2) - v3 - v4;
        out[3 * os + q] = v1 - v2 + 2.f * (v3 - v4) - 5.f * v5;
        out[4 * os + q] = v0 + v1 + v2 + v3 + v4;
        out[5 * os + q] = v5;
    }
}
static inline void at6(const float *RESTRICT in, int64_t is, float *RESTRICT out, int64_t os, int64_t n) {
    for (int64_t q = 0; q < n; q++) { /* out = A^T in, 6 -> 4 */
        float m0 = in[q], m1 = in[is + q], m2 = in[2 * is + q], m3 = in[3 * is + q], m4 = in[4 * is + q],
              m5 = in[5 * is + q];
        float s12 = m1 + m2, d12 = m1 - m2, s34 = m3 + m4, d34 = m3 - m4;
        out[q] = m0 + s12 + s34;
        out[os + q] = d12 + 2.f * d34;
        out[2 * os + q] = s12 + 4.f * s34;
        out[3 * os + q] = d12 + 8.f * d34 + m5;
    }
}
static inline void a6(const float *RESTRICT in, int64_t is, float *RESTRICT out, int64_t os, int64_t n) {
    for (int64_t q = 0; q < n; q++) { /* out = A in, 4 -> 6: the adjoint of at6 */
        float y0 = in[q], y1 = in[is + q], y2 = in[2 * is + q], y3 = in[3 * is + q];
        out[q] = y0;
        out[os + q] = y0 + y1 + y2 + y3;
        out[2 * os + q] = y0 - y1 + y2 - y3;
        out[3 * os + q] = y0 + 2.f * y1 + 4.f * y2 + 8.f * y3;
        out[4 * os + q] = y0 - 2.f * y1 + 4.f * y2 - 8.f * y3;
        out[5 * os + q] = y3;
    }
}

/* Multiplications by the rounded fractions (as PyTorch's fp32 matrices hold them): divisions are slow. */
#define R4 0.25f
#define R6 (1.f / 6.f)
#define R12 (1.f / 12.f)
#define R24 (1.f / 24.f)
static inline void g6(const float *RESTRICT in, int64_t is, float *RESTRICT out, int64_t os, int64_t n) {
    for (int64_t q = 0; q < n; q++) { /* out = G in, 3 -> 6 */
        float g0 = in[q], g1 = in[is + q], g2 = in[2 * is + q];
        out[q] = R4 * g0;
        out[os + q] = -R6 * g0 - R6 * g1 - R6 * g2;
        out[2 * os + q] = -R6 * g0 + R6 * g1 - R6 * g2;
        out[3 * os + q] = R24 * g0 + R12 * g1 + R6 * g2;
        out[4 * os + q] = R24 * g0 - R12 * g1 + R6 * g2;
        out[5 * os + q] = g2;
    }
}
static inline void gt6(const float *RESTRICT in, int64_t is, float *RESTRICT out, int64_t os, int64_t n) {
    for (int64_t q = 0; q < n; q++) { /* out = G^T in, 6 -> 3: the adjoint of g6 */
        float u0 = in[q], u1 = in[is + q], u2 = in[2 * is + q], u3 = in[3 * is + q], u4 = in[4 * is + q],
              u5 = in[5 * is + q];
        out[q] = R4 * u0 - R6 * u1 - R6 * u2 + R24 * u3 + R24 * u4;
        out[os + q] = -R6 * u1 + R6 * u2 + R12 * u3 - R12 * u4;
        out[2 * os + q] = -R6 * u1 - R6 * u2 + R6 * u3 + R6 * u4 + u5;
    }
}

/* U [36, F] = G g G^T of each of the F 3x3 filters of w [F, 3, 3]. */
void filter_transform(const float *w, float *U, int64_t F) {
#pragma omp parallel for schedule(static)
    for (int64_t f0 = 0; f0 < F; f0 += CH) {
        int64_t len = F - f0 < CH ? F - f0 : CH;
        float buf[36 * CH], g[9 * TB], t[18 * TB];
        for (int64_t b0 = 0; b0 < len; b0 += TB) {
            int64_t b = len - b0 < TB ? len - b0 : TB;
            for (int64_t q = 0; q < b; q++)
                for (int k = 0; k < 9; k++) g[k * TB + q] = w[(f0 + b0 + q) * 9 + k];
            for (int j = 0; j < 3; j++) g6(g + j * TB, 3 * TB, t + j * TB, 3 * TB, b);           /* columns: t[6][3] */
            for (int i = 0; i < 6; i++) g6(t + 3 * i * TB, TB, buf + 6 * i * CH + b0, CH, b);  /* rows */
        }
        rows_out(buf, U + f0, F, len);
    }
}

/* dw [F, 3, 3] = G^T dU G: the adjoint of filter_transform. */
void filter_adjoint(const float *dU, float *dw, int64_t F) {
#pragma omp parallel for schedule(static)
    for (int64_t f0 = 0; f0 < F; f0 += TB) {
        int64_t b = F - f0 < TB ? F - f0 : TB;
        float t[18 * TB], o[9 * TB];
        for (int i = 0; i < 6; i++) gt6(dU + 6 * i * F + f0, F, t + 3 * i * TB, TB, b); /* rows: t[6][3] */
        for (int j = 0; j < 3; j++) gt6(t + j * TB, 3 * TB, o + j * TB, 3 * TB, b);      /* columns: o[3][3] */
        for (int64_t q = 0; q < b; q++)
            for (int k = 0; k < 9; k++) dw[(f0 + q) * 9 + k] = o[k * TB + q];
    }
}

/* V = B^T d B of every 6x6 tile (stride 4) of x. Chunks of CH tiles of a channel, across images. */
void input_transform(const float *x, float *V, int64_t N, int64_t C, int64_t Hp, int64_t Wp) {
    int64_t nh = (Hp - 2) / 4, nw = (Wp - 2) / 4, T = nh * nw, P = N * T, ks = C * P;
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t c = 0; c < C; c++)
        for (int64_t p0 = 0; p0 < P; p0 += CH) {
            int64_t len = P - p0 < CH ? P - p0 : CH;
            float buf[36 * CH], d[36 * TB], t[36 * TB];
            for (int64_t b0 = 0; b0 < len; b0 += TB) {
                int64_t b = len - b0 < TB ? len - b0 : TB;
                for (int64_t q = 0; q < b; q++) {
                    int64_t p = p0 + b0 + q, r = p % T;
                    const float *src = x + (p / T * C + c) * Hp * Wp + r / nw * 4 * Wp + r % nw * 4;
                    for (int i = 0; i < 6; i++)
                        for (int j = 0; j < 6; j++) d[(6 * i + j) * TB + q] = src[i * Wp + j];
                }
                for (int j = 0; j < 6; j++) bt6(d + j * TB, 6 * TB, t + j * TB, 6 * TB, b);          /* columns */
                for (int i = 0; i < 6; i++) bt6(t + 6 * i * TB, TB, buf + 6 * i * CH + b0, CH, b);  /* rows */
            }
            rows_out(buf, V + c * P + p0, ks, len);
        }
}

/* dx = the sum of B dV B^T of every tile, each added at its tile's place: the adjoint of
 * input_transform. Tiles overlap, so each plane has one thread, which zeroes it first. */
void input_adjoint(const float *dV, float *dx, int64_t N, int64_t C, int64_t Hp, int64_t Wp) {
    int64_t nh = (Hp - 2) / 4, nw = (Wp - 2) / 4, T = nh * nw, P = N * T, ks = C * P;
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t c = 0; c < C; c++)
        for (int64_t n = 0; n < N; n++) {
            float *plane = dx + (n * C + c) * Hp * Wp;
            float buf[36 * CH], t[36 * TB], d[36 * TB];
            for (int64_t k = 0; k < Hp * Wp; k++) plane[k] = 0.f;
            for (int64_t p0 = 0; p0 < T; p0 += CH) {
                int64_t len = T - p0 < CH ? T - p0 : CH;
                rows_in(dV + c * P + n * T + p0, ks, buf, len);
                for (int64_t b0 = 0; b0 < len; b0 += TB) {
                    int64_t b = len - b0 < TB ? len - b0 : TB;
                    for (int i = 0; i < 6; i++) b6(buf + 6 * i * CH + b0, CH, t + 6 * i * TB, TB, b);  /* rows */
                    for (int j = 0; j < 6; j++) b6(t + j * TB, 6 * TB, d + j * TB, 6 * TB, b);          /* columns */
                    for (int64_t q = 0; q < b; q++) {
                        int64_t r = p0 + b0 + q;
                        float *dst = plane + r / nw * 4 * Wp + r % nw * 4;
                        for (int i = 0; i < 6; i++)
                            for (int j = 0; j < 6; j++) dst[i * Wp + j] += d[(6 * i + j) * TB + q];
                    }
                }
            }
        }
}

/* y = A^T M A (+ bias) of every tile. Chunks of CH tiles of a channel, across images. */
void output_transform(const float *M, const float *bias, float *y, int64_t N, int64_t Co, int64_t nh, int64_t nw) {
    int64_t T = nh * nw, P = N * T, W = 4 * nw, ks = Co * P;
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t co = 0; co < Co; co++)
        for (int64_t p0 = 0; p0 < P; p0 += CH) {
            int64_t len = P - p0 < CH ? P - p0 : CH;
            float beta = bias ? bias[co] : 0.f;
            float buf[36 * CH], t[24 * TB], o[16 * TB];
            rows_in(M + co * P + p0, ks, buf, len);
            for (int64_t b0 = 0; b0 < len; b0 += TB) {
                int64_t b = len - b0 < TB ? len - b0 : TB;
                for (int i = 0; i < 6; i++) at6(buf + 6 * i * CH + b0, CH, t + 4 * i * TB, TB, b);  /* rows: t[6][4] */
                for (int j = 0; j < 4; j++) at6(t + j * TB, 4 * TB, o + j * TB, 4 * TB, b);          /* columns: o[4][4] */
                for (int64_t q = 0; q < b; q++) {
                    int64_t p = p0 + b0 + q, r = p % T;
                    float *dst = y + (p / T * Co + co) * 16 * T + r / nw * 4 * W + r % nw * 4;
                    for (int i = 0; i < 4; i++)
                        for (int j = 0; j < 4; j++) dst[i * W + j] = o[(4 * i + j) * TB + q] + beta;
                }
            }
        }
}

/* dM = A dy A^T of every 4x4 tile of dy: the adjoint of output_transform; and db[co] = the sum of dy over its
 * channel, the bias gradient (skipped where db is NULL). Channels are shared out whole, so each sum has one thread. */
void output_adjoint(const float *dy, float *dM, float *db, int64_t N, int64_t Co, int64_t nh, int64_t nw) {
    int64_t T = nh * nw, P = N * T, W = 4 * nw, ks = Co * P;
#pragma omp parallel for schedule(static)
    for (int64_t co = 0; co < Co; co++) {
        float sum[TB] = {0.f};
        for (int64_t p0 = 0; p0 < P; p0 += CH) {
            int64_t len = P - p0 < CH ? P - p0 : CH;
            float buf[36 * CH], g[16 * TB], t[24 * TB];
            for (int64_t b0 = 0; b0 < len; b0 += TB) {
                int64_t b = len - b0 < TB ? len - b0 : TB;
                for (int64_t q = 0; q < b; q++) {
                    int64_t p = p0 + b0 + q, r = p % T;
                    const float *src = dy + (p / T * Co + co) * 16 * T + r / nw * 4 * W + r % nw * 4;
                    for (int i = 0; i < 4; i++)
                        for (int j = 0; j < 4; j++) g[(4 * i + j) * TB + q] = src[i * W + j];
                }
                for (int k = 0; k < 16; k++)
                    for (int64_t q = 0; q < b; q++) sum[q] += g[k * TB + q];
                for (int j = 0; j < 4; j++) a6(g + j * TB, 4 * TB, t + j * TB, 4 * TB, b);           /* columns: t[6][4] */
                for (int i = 0; i < 6; i++) a6(t + 4 * i * TB, TB, buf + 6 * i * CH + b0, CH, b);  /* rows */
            }
            rows_out(buf, dM + co * P + p0, ks, len);
        }
        if (db) {
            float s = 0.f;
            for (int q = 0; q < TB; q++) s += sum[q];
            db[co] = s;
        }
    }
}
