// The RIMs time loop (Goyal et al. 2021, section 2) in plain C++ over raw float/double arrays.
//
// Built on first use by rims_rl/nn/rims_native.py (no torch headers: it compiles in seconds) and called
// through ctypes with tensors' data pointers. At the sizes RL uses (a few units of 32-85, 1-32 envs) one
// step is a few hundred tiny matrix products and elementwise ops; run as ATen ops each costs microseconds
// of dispatch, here they cost their arithmetic.
//
// Covered: LSTM cell, selection "null", communication on/off with a plain or gated residual, any number of
// input and communication heads. Layouts (all contiguous, row-major):
//   keys      (T, B, H, Kk)          input keys, shared by all units
//   cell_in   (T, B, U, H, G)        per-unit cell input of each head's value, G = 4 d (gates i, f, g, o)
//   starts    (T, B) uint8 or null   1 where an env starts an episode: its state is set to 0 before that step
//   h0, c0    (U, B, d)
//   w_rec     (U, d, P)              P = G + H Kk (recurrent gates, then input-attention queries)
//   b_rec     (U, Pb)                bias of the first Pb <= P outputs (Pb = G: no query bias)
//   w_qkv     (U, d, Q)              Q = CH (2 dk + dv): communication queries, keys, values
//   w_out     (U, CH dv, O), b_out (U, O)   O = d (plain residual) or 2 d (gated: gate, value)
//   out       (T, B, U, d)           h after every step (batch-major: the (T, B, hidden) output as it is)
// Saved per step for the backward, unit-major over time (U, T, B, .): the state read (after resets),
// gate activations, tanh(c_new), input attention and queries, and the communication's tensors.

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

// exp without errno or branches, so that loops over it vectorize: 2^n * p(r), |r| <= ln2 / 2.
template <typename T>
inline T fast_exp(T x);

// NaN in gives NaN out without converting NaN to an integer (undefined behaviour): x is replaced by 0 for the
// arithmetic and the result by x at the end. The exponent bits are built in unsigned arithmetic (no negative shift).
template <>
inline double fast_exp<double>(double x) {
    const bool nan = x != x;
    const double in = x;
    x = nan ? 0.0 : (x < -708.0 ? -708.0 : (x > 708.0 ? 708.0 : x));
    const double n = std::nearbyint(x * 1.4426950408889634);
    const double r = (x - n * 0.693147180369123816490) - n * 1.90821492927058770002e-10;
    double p = 1.0 / 479001600.0;  // Taylor to r^12: relative error < 2e-16 for |r| <= 0.35
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    const uint64_t bits = static_cast<uint64_t>(static_cast<int64_t>(n) + 1023) << 52;
    double scale;
    std::memcpy(&scale, &bits, sizeof scale);
    return nan ? in : p * scale;
}

template <>
inline float fast_exp<float>(float x) {
    const bool nan = x != x;
    const float in = x;
    x = nan ? 0.0f : (x < -87.0f ? -87.0f : (x > 87.0f ? 87.0f : x));
    const float n = std::nearbyint(x * 1.44269504f);
    const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;  // Cephes expf polynomial
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    const uint32_t bits = static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, sizeof scale);
    return nan ? in : p * scale;
}

template <typename T>
inline T sigmoid(T x) {
    return T(1) / (T(1) + fast_exp<T>(-x));
}

template <typename T>
inline T tanh_(T x) {
    return T(2) / (T(1) + fast_exp<T>(T(-2) * x)) - T(1);
}

// Bytes of one vector register of the target: wider GCC vectors than the CPU has are split into spills and
// shuffles (64-byte vectors on an AVX2 CPU ran the products ~10x slower than 32-byte ones).
#if defined(__AVX512F__)
constexpr int VEC_BYTES = 64;
#elif defined(__AVX__)
constexpr int VEC_BYTES = 32;
#else
constexpr int VEC_BYTES = 16;
#endif

// C (M x N) = [C +] A (M x K) B (K x N); leading dimensions lda, ldb, ldc. A register-tiled kernel in GCC
// vector extensions: MR rows x NV vectors of C stay in registers over the whole K loop.
template <typename T, int MR, int NV>
inline void gemm_tile(int64_t K, const T* A, int64_t lda, int64_t inca, const T* B, int64_t ldb, T* C, int64_t ldc,
                      bool accumulate) {
    typedef T V __attribute__((vector_size(VEC_BYTES)));
    constexpr int L = VEC_BYTES / sizeof(T);
    V acc[MR][NV];
    for (int r = 0; r < MR; ++r)
        for (int j = 0; j < NV; ++j) acc[r][j] = V{};
    for (int64_t k = 0; k < K; ++k) {
        V b[NV];
        for (int j = 0; j < NV; ++j) std::memcpy(&b[j], B + k * ldb + j * L, sizeof(V));
        for (int r = 0; r < MR; ++r) {
            const T a = A[r * lda + k * inca];
            for (int j = 0; j < NV; ++j) acc[r][j] += a * b[j];
        }
    }
    for (int r = 0; r < MR; ++r)
        for (int j = 0; j < NV; ++j) {
            T* c = C + r * ldc + j * L;
            if (accumulate) {
                V old;
                std::memcpy(&old, c, sizeof(V));
                acc[r][j] += old;
            }
            std::memcpy(c, &acc[r][j], sizeof(V));
        }
}

template <typename T, int NV>
inline void gemm_cols(int64_t M, int64_t K, const T* A, int64_t lda, int64_t inca, const T* B, int64_t ldb, T* C,
                      int64_t ldc, bool accumulate) {
    int64_t m = 0;
    for (; m + 4 <= M; m += 4) gemm_tile<T, 4, NV>(K, A + m * lda, lda, inca, B, ldb, C + m * ldc, ldc, accumulate);
    switch (M - m) {
        case 3: gemm_tile<T, 3, NV>(K, A + m * lda, lda, inca, B, ldb, C + m * ldc, ldc, accumulate); break;
        case 2: gemm_tile<T, 2, NV>(K, A + m * lda, lda, inca, B, ldb, C + m * ldc, ldc, accumulate); break;
        case 1: gemm_tile<T, 1, NV>(K, A + m * lda, lda, inca, B, ldb, C + m * ldc, ldc, accumulate); break;
        default: break;
    }
}

// C (M x N) = [C +] A (M x K) B (K x N), A[m, k] at A[m * lda + k * inca] (inca = 1: row-major; lda = 1: A is
// stored transposed, as for weight gradients X^T dY).
template <typename T>
void gemm(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb, T* C, int64_t ldc,
          bool accumulate, int64_t inca = 1) {
    constexpr int64_t L = VEC_BYTES / sizeof(T);
    if (!accumulate && K == 0) {
        for (int64_t m = 0; m < M; ++m) std::memset(C + m * ldc, 0, sizeof(T) * N);
        return;
    }
    int64_t n = 0;
    for (; n + 2 * L <= N; n += 2 * L) gemm_cols<T, 2>(M, K, A, lda, inca, B + n, ldb, C + n, ldc, accumulate);
    for (; n + L <= N; n += L) gemm_cols<T, 1>(M, K, A, lda, inca, B + n, ldb, C + n, ldc, accumulate);
    if (n == N) return;
    for (int64_t m = 0; m < M; ++m) {  // the last N % L columns
        T* c = C + m * ldc;
        for (int64_t j = n; j < N; ++j) {
            T s = accumulate ? c[j] : T(0);
            for (int64_t k = 0; k < K; ++k) s += A[m * lda + k * inca] * B[k * ldb + j];
            c[j] = s;
        }
    }
}

struct Dims {
    int64_t T, B, U, d, H, Kk, kA, comm, gated, CH, dk, dv, Pb;
    int64_t G() const { return 4 * d; }
    int64_t P() const { return G() + H * Kk; }
    int64_t Q() const { return CH * (2 * dk + dv); }
    int64_t O() const { return gated ? 2 * d : d; }
    int64_t R() const { return CH * dv; }
};

template <typename T>
struct Fwd {
    const T *keys, *cell_in, *h0, *c0, *w_rec, *b_rec, *w_qkv, *w_out, *b_out;
    const uint8_t* starts;
    T *out, *c_n;
    uint8_t* active;
    // saved (U, T, B, .)
    T *s_h, *s_c, *s_gates, *s_tanh_c, *s_attn, *s_queries, *s_comm_in, *s_qkv, *s_probs, *s_read, *s_out;
};

template <typename T>
void forward(const Dims& D, const Fwd<T>& F) {
    const int64_t T_ = D.T, B = D.B, U = D.U, d = D.d, H = D.H, Kk = D.Kk, G = D.G(), P = D.P(), Q = D.Q(),
                  O = D.O(), R = D.R(), CH = D.CH, dk = D.dk, dv = D.dv;
    const T scale = T(1) / std::sqrt(T(Kk));
    const T comm_scale = T(1) / std::sqrt(T(dk));
    std::vector<T> h(F.h0, F.h0 + U * B * d), c(F.c0, F.c0 + U * B * d), hn(U * B * d), cn(U * B * d);
    std::vector<T> proj(U * B * P);
    std::vector<T> null_attn(U * B);
    std::vector<uint8_t> act(U * B);
    std::vector<T> scores(U);  // one query's communication scores over the key units
    for (int64_t t = 0; t < T_; ++t) {
        const T* keys = F.keys + t * B * H * Kk;
        if (F.starts) {  // episode start: the state is set (not multiplied) to zero, so NaN or inf cannot survive
            for (int64_t b = 0; b < B; ++b)
                if (F.starts[t * B + b])
                    for (int64_t u = 0; u < U; ++u) {
                        std::memset(&h[(u * B + b) * d], 0, sizeof(T) * d);
                        std::memset(&c[(u * B + b) * d], 0, sizeof(T) * d);
                    }
        }
        for (int64_t u = 0; u < U; ++u) {
            const int64_t ut = (u * T_ + t) * B;  // row of (U, T, B, .) saved buffers
            const T* hu = &h[u * B * d];
            std::memcpy(F.s_h + ut * d, hu, sizeof(T) * B * d);
            std::memcpy(F.s_c + ut * d, &c[u * B * d], sizeof(T) * B * d);
            // Steps 1 + 3 read h_{t-1}: gates and input queries in one product, proj = b + h W.
            T* proj_u = &proj[u * B * P];
            for (int64_t b = 0; b < B; ++b) {
                T* row = proj_u + b * P;
                const T* bias = F.b_rec + u * D.Pb;
                for (int64_t j = 0; j < D.Pb; ++j) row[j] = bias[j];
                for (int64_t j = D.Pb; j < P; ++j) row[j] = T(0);
            }
            gemm<T>(B, P, d, hu, d, F.w_rec + u * d * P, P, proj_u, P, true);
            for (int64_t b = 0; b < B; ++b) {
                const T* row = proj_u + b * P;
                T* attn = F.s_attn + (ut + b) * H;
                std::memcpy(F.s_queries + (ut + b) * H * Kk, row + G, sizeof(T) * H * Kk);
                // Step 1: attention over [null; x]; the null key is 0, so P(input) = sigmoid(q.k / sqrt(Kk)).
                T mean = T(0);
                for (int64_t hh = 0; hh < H; ++hh) {
                    const T* q = row + G + hh * Kk;
                    const T* k = keys + (b * H + hh) * Kk;
                    T s = T(0);
#pragma omp simd reduction(+ : s)
                    for (int64_t j = 0; j < Kk; ++j) s += q[j] * k[j];
                    attn[hh] = sigmoid<T>(s * scale);
                    mean += attn[hh];
                }
                null_attn[u * B + b] = T(1) - mean / T(H);
            }
        }
        // Step 2: the kA units with the least attention on the null row are active (ties: lower unit first). As in
        // torch.sort, NaN ranks after every number and NaNs tie with each other.
        for (int64_t b = 0; b < B; ++b)
            for (int64_t u = 0; u < U; ++u) {
                int64_t rank = 0;
                const T mine = null_attn[u * B + b];
                const bool mine_nan = mine != mine;
                for (int64_t v = 0; v < U; ++v) {
                    const T other = null_attn[v * B + b];
                    const bool other_nan = other != other;
                    const bool less = mine_nan ? !other_nan : other < mine;
                    const bool tie = mine_nan ? other_nan : other == mine;
                    rank += less || (tie && v < u);
                }
                act[u * B + b] = D.kA >= U || rank < D.kA;
            }
        // Step 3: LSTM cell of the active units on the attended input, z = proj + sum_h attn_h * U_h. The gate
        // buffers of inactive units are left unwritten: the backward never reads them.
        for (int64_t u = 0; u < U; ++u) {
            const int64_t ut = (u * T_ + t) * B;
            for (int64_t b = 0; b < B; ++b) {
                if (!act[u * B + b]) continue;
                const T* row = &proj[(u * B + b) * P];
                const T* attn = F.s_attn + (ut + b) * H;
                const T* ci = F.cell_in + ((t * B + b) * U + u) * H * G;
                T* gates = F.s_gates + (ut + b) * G;
                for (int64_t j = 0; j < G; ++j) gates[j] = row[j];
                for (int64_t hh = 0; hh < H; ++hh)
#pragma omp simd
                    for (int64_t j = 0; j < G; ++j) gates[j] += attn[hh] * ci[hh * G + j];
#pragma omp simd
                for (int64_t j = 0; j < 2 * d; ++j) gates[j] = sigmoid<T>(gates[j]);
#pragma omp simd
                for (int64_t j = 2 * d; j < 3 * d; ++j) gates[j] = tanh_<T>(gates[j]);
#pragma omp simd
                for (int64_t j = 3 * d; j < G; ++j) gates[j] = sigmoid<T>(gates[j]);
                const T* cu = &c[(u * B + b) * d];
                T* cnu = &cn[(u * B + b) * d];
                T* hnu = &hn[(u * B + b) * d];
                T* tc = F.s_tanh_c + (ut + b) * d;
#pragma omp simd
                for (int64_t j = 0; j < d; ++j) {
                    cnu[j] = gates[d + j] * cu[j] + gates[j] * gates[2 * d + j];
                    tc[j] = tanh_<T>(cnu[j]);
                    hnu[j] = gates[3 * d + j] * tc[j];
                }
            }
        }
        // Step 4: communication. Every unit's post-update state (inactive: old state) is read; the residual
        // is added to active units only.
        if (D.comm) {  // written straight into the saved buffers, which the backward reads
            for (int64_t u = 0; u < U; ++u) {
                const int64_t ut = (u * T_ + t) * B;
                T* comm_in = F.s_comm_in + ut * d;
                for (int64_t b = 0; b < B; ++b) {
                    const int64_t i = (u * B + b) * d;
                    std::memcpy(comm_in + b * d, act[u * B + b] ? &hn[i] : &h[i], sizeof(T) * d);
                }
                gemm<T>(B, Q, d, comm_in, d, F.w_qkv + u * d * Q, Q, F.s_qkv + ut * Q, Q, false);
            }
            for (int64_t uq = 0; uq < U; ++uq)
                for (int64_t b = 0; b < B; ++b) {
                    const T* qrow = F.s_qkv + ((uq * T_ + t) * B + b) * Q;
                    T* rd = F.s_read + ((uq * T_ + t) * B + b) * R;
                    std::memset(rd, 0, sizeof(T) * R);
                    T* probs = F.s_probs + ((uq * T_ + t) * B + b) * U * CH;  // (uk, heads)
                    if (!act[uq * B + b]) {  // an inactive unit's residual is not used: it reads nothing
                        std::memset(probs, 0, sizeof(T) * U * CH);
                        continue;
                    }
                    for (int64_t hh = 0; hh < CH; ++hh) {
                        const T* q = qrow + hh * dk;
                        T mx = -INFINITY;
                        for (int64_t uk = 0; uk < U; ++uk) {
                            const T* k = F.s_qkv + ((uk * T_ + t) * B + b) * Q + CH * dk + hh * dk;
                            T s = T(0);
#pragma omp simd reduction(+ : s)
                            for (int64_t j = 0; j < dk; ++j) s += q[j] * k[j];
                            scores[uk] = s * comm_scale;
                            mx = scores[uk] > mx ? scores[uk] : mx;
                        }
                        T sum = T(0);
                        for (int64_t uk = 0; uk < U; ++uk) {
                            scores[uk] = fast_exp<T>(scores[uk] - mx);
                            sum += scores[uk];
                        }
                        for (int64_t uk = 0; uk < U; ++uk) {
                            const T p = scores[uk] / sum;
                            probs[uk * CH + hh] = p;
                            const T* v = F.s_qkv + ((uk * T_ + t) * B + b) * Q + 2 * CH * dk + hh * dv;
#pragma omp simd
                            for (int64_t j = 0; j < dv; ++j) rd[hh * dv + j] += p * v[j];
                        }
                    }
                }
            for (int64_t u = 0; u < U; ++u) {
                const int64_t ut = (u * T_ + t) * B;
                T* cout = F.s_out + ut * O;
                for (int64_t b = 0; b < B; ++b) std::memcpy(cout + b * O, F.b_out + u * O, sizeof(T) * O);
                gemm<T>(B, O, R, F.s_read + ut * R, R, F.w_out + u * R * O, O, cout, O, true);
                for (int64_t b = 0; b < B; ++b) {
                    T* hnu = &hn[(u * B + b) * d];
                    const T* o = cout + b * O;
                    if (D.gated) {
#pragma omp simd
                        for (int64_t j = 0; j < d; ++j) hnu[j] += sigmoid<T>(o[j]) * tanh_<T>(o[d + j]);
                    } else {
#pragma omp simd
                        for (int64_t j = 0; j < d; ++j) hnu[j] += o[j];
                    }
                }
            }
        }
        // Inactive units keep their state exactly.
        for (int64_t u = 0; u < U; ++u)
            for (int64_t b = 0; b < B; ++b) {
                const int64_t i = (u * B + b) * d;
                const bool on = act[u * B + b];
                F.active[(t * U + u) * B + b] = on;
                if (on) {
                    std::memcpy(&h[i], &hn[i], sizeof(T) * d);
                    std::memcpy(&c[i], &cn[i], sizeof(T) * d);
                }
            }
        for (int64_t b = 0; b < B; ++b)
            for (int64_t u = 0; u < U; ++u)
                std::memcpy(F.out + ((t * B + b) * U + u) * d, &h[(u * B + b) * d], sizeof(T) * d);
    }
    std::memcpy(F.c_n, c.data(), sizeof(T) * U * B * d);
}

template <typename T>
struct Bwd {
    const T *d_out, *d_cn, *keys, *cell_in, *wt_rec, *wt_qkv, *wt_out;  // wt_*: weights transposed, (U, out, in)
    const uint8_t *starts, *active;
    const T *s_h, *s_c, *s_gates, *s_tanh_c, *s_attn, *s_queries, *s_comm_in, *s_qkv, *s_probs, *s_read, *s_out;
    T *d_keys, *d_cell_in, *dh0, *dc0;
    T *g_rec, *g_brec, *g_qkv, *g_out, *g_bout;  // weight gradients, shaped as the weights
};

// Backward through time. Only active units' rows carry gradient into their cell, input attention, and
// communication output, so those products run over the active rows alone, gathered per unit; weight gradients
// accumulate step by step while the step's tensors are in cache.
template <typename T>
void backward(const Dims& D, const Bwd<T>& F) {
    const int64_t T_ = D.T, B = D.B, U = D.U, d = D.d, H = D.H, Kk = D.Kk, G = D.G(), P = D.P(), Q = D.Q(),
                  O = D.O(), R = D.R(), CH = D.CH, dk = D.dk, dv = D.dv;
    const T scale = T(1) / std::sqrt(T(Kk));
    const T comm_scale = T(1) / std::sqrt(T(dk));
    std::vector<T> dh(U * B * d, T(0)), dc(F.d_cn, F.d_cn + U * B * d);
    std::vector<T> dh_new(U * B * d), d_read(U * B * R), d_comm_in(B * d), d_qkv(U * B * Q);
    std::vector<T> dp(B * P), h_rows(B * d), dh_rows(B * d), do_rows(B * O), read_rows(B * R), dread_rows(B * R);
    std::vector<T> d_probs(U);
    std::vector<int64_t> rows(B);
    std::memset(F.d_keys, 0, sizeof(T) * T_ * B * H * Kk);
    std::memset(F.g_rec, 0, sizeof(T) * U * d * P);
    std::memset(F.g_brec, 0, sizeof(T) * U * D.Pb);
    if (D.comm) {
        std::memset(F.g_qkv, 0, sizeof(T) * U * d * Q);
        std::memset(F.g_out, 0, sizeof(T) * U * R * O);
        std::memset(F.g_bout, 0, sizeof(T) * U * O);
    }
    for (int64_t t = T_ - 1; t >= 0; --t) {
        for (int64_t b = 0; b < B; ++b)
            for (int64_t u = 0; u < U; ++u) {
                const T* g = F.d_out + ((t * B + b) * U + u) * d;
                T* dst = &dh[(u * B + b) * d];
#pragma omp simd
                for (int64_t j = 0; j < d; ++j) dst[j] += g[j];
            }
        const uint8_t* act = F.active + t * U * B;
        // h_out = where(active, h_new + residual, h): active rows move to dh_new, dh keeps what passes to h_{t-1}
        for (int64_t u = 0; u < U; ++u)
            for (int64_t b = 0; b < B; ++b) {
                const int64_t i = (u * B + b) * d;
                if (act[u * B + b]) {
                    std::memcpy(&dh_new[i], &dh[i], sizeof(T) * d);
                    std::memset(&dh[i], 0, sizeof(T) * d);
                } else {
                    std::memset(&dh_new[i], 0, sizeof(T) * d);
                }
            }
        if (D.comm) {
            // residual = out (plain) or sigmoid(gate) * tanh(value); out = b + read W_out, on active rows
            for (int64_t u = 0; u < U; ++u) {
                const int64_t ut = (u * T_ + t) * B;
                int64_t n = 0;
                for (int64_t b = 0; b < B; ++b) {
                    if (!act[u * B + b]) continue;
                    const T* g = &dh_new[(u * B + b) * d];
                    T* dor = &do_rows[n * O];
                    if (D.gated) {
                        const T* o = F.s_out + (ut + b) * O;
#pragma omp simd
                        for (int64_t j = 0; j < d; ++j) {
                            const T s = sigmoid<T>(o[j]), tv = tanh_<T>(o[d + j]);
                            dor[j] = g[j] * tv * s * (T(1) - s);
                            dor[d + j] = g[j] * s * (T(1) - tv * tv);
                        }
                    } else {
                        std::memcpy(dor, g, sizeof(T) * d);
                    }
                    std::memcpy(&read_rows[n * R], F.s_read + (ut + b) * R, sizeof(T) * R);
                    rows[n++] = b;
                }
                gemm<T>(n, R, O, do_rows.data(), O, F.wt_out + u * O * R, R, dread_rows.data(), R, false);
                gemm<T>(R, O, n, read_rows.data(), 1, do_rows.data(), O, F.g_out + u * R * O, O, true, R);
                for (int64_t k = 0; k < n; ++k) {
                    T* gb = F.g_bout + u * O;
#pragma omp simd
                    for (int64_t j = 0; j < O; ++j) gb[j] += do_rows[k * O + j];
                    std::memcpy(&d_read[(u * B + rows[k]) * R], &dread_rows[k * R], sizeof(T) * R);
                }
            }
            std::memset(d_qkv.data(), 0, sizeof(T) * U * B * Q);
            for (int64_t uq = 0; uq < U; ++uq)
                for (int64_t b = 0; b < B; ++b) {
                    if (!act[uq * B + b]) continue;  // its residual is unused: no gradient reaches q, k, v from it
                    const T* qrow = F.s_qkv + ((uq * T_ + t) * B + b) * Q;
                    const T* probs = F.s_probs + ((uq * T_ + t) * B + b) * U * CH;
                    const T* dr = &d_read[(uq * B + b) * R];
                    T* dq = &d_qkv[(uq * B + b) * Q];
                    for (int64_t hh = 0; hh < CH; ++hh) {
                        T dot = T(0);
                        for (int64_t uk = 0; uk < U; ++uk) {
                            const T* v = F.s_qkv + ((uk * T_ + t) * B + b) * Q + 2 * CH * dk + hh * dv;
                            T* dv_ = &d_qkv[(uk * B + b) * Q + 2 * CH * dk + hh * dv];
                            const T p = probs[uk * CH + hh];
                            T s = T(0);
#pragma omp simd reduction(+ : s)
                            for (int64_t j = 0; j < dv; ++j) {
                                s += dr[hh * dv + j] * v[j];
                                dv_[j] += p * dr[hh * dv + j];
                            }
                            d_probs[uk] = s;
                            dot += s * p;
                        }
                        for (int64_t uk = 0; uk < U; ++uk) {
                            const T ds = probs[uk * CH + hh] * (d_probs[uk] - dot) * comm_scale;
                            const T* k = F.s_qkv + ((uk * T_ + t) * B + b) * Q + CH * dk + hh * dk;
                            T* dk_ = &d_qkv[(uk * B + b) * Q + CH * dk + hh * dk];
                            const T* q = qrow + hh * dk;
#pragma omp simd
                            for (int64_t j = 0; j < dk; ++j) {
                                dq[hh * dk + j] += ds * k[j];
                                dk_[j] += ds * q[j];
                            }
                        }
                    }
                }
            for (int64_t u = 0; u < U; ++u) {
                const int64_t ut = (u * T_ + t) * B;
                // qkv = comm_in W_qkv, every unit's rows (inactive units' keys and values are read too)
                gemm<T>(B, d, Q, &d_qkv[u * B * Q], Q, F.wt_qkv + u * Q * d, d, d_comm_in.data(), d, false);
                gemm<T>(d, Q, B, F.s_comm_in + ut * d, 1, &d_qkv[u * B * Q], Q, F.g_qkv + u * d * Q, Q, true, d);
                // comm_in = where(active, h_new, h): its gradient goes to h_new or to h_{t-1}
                for (int64_t b = 0; b < B; ++b) {
                    const int64_t i = (u * B + b) * d;
                    T* dst = act[u * B + b] ? &dh_new[i] : &dh[i];
#pragma omp simd
                    for (int64_t j = 0; j < d; ++j) dst[j] += d_comm_in[b * d + j];
                }
            }
        }
        for (int64_t u = 0; u < U; ++u) {
            const int64_t ut = (u * T_ + t) * B;
            int64_t n = 0;
            for (int64_t b = 0; b < B; ++b) {
                const int64_t i = (u * B + b) * d;
                if (!act[u * B + b]) {  // dc passes to c_{t-1} unchanged; nothing reaches gates, queries, cell input
                    std::memset(F.d_cell_in + ((t * B + b) * U + u) * H * G, 0, sizeof(T) * H * G);
                    continue;
                }
                T* dpr = &dp[n * P];
                const T* gates = F.s_gates + (ut + b) * G;
                const T* tc = F.s_tanh_c + (ut + b) * d;
                const T* c = F.s_c + (ut + b) * d;
                T* dcu = &dc[i];
                const T* dhn = &dh_new[i];
#pragma omp simd
                for (int64_t j = 0; j < d; ++j) {
                    const T ig = gates[j], fg = gates[d + j], gg = gates[2 * d + j], og = gates[3 * d + j];
                    const T dcn = dcu[j] + dhn[j] * og * (T(1) - tc[j] * tc[j]);
                    dpr[j] = dcn * gg * ig * (T(1) - ig);
                    dpr[d + j] = dcn * c[j] * fg * (T(1) - fg);
                    dpr[2 * d + j] = dcn * ig * (T(1) - gg * gg);
                    dpr[3 * d + j] = dhn[j] * tc[j] * og * (T(1) - og);
                    dcu[j] = dcn * fg;
                }
                // input attention: z = proj + sum_h attn_h U_h, attn_h = sigmoid(q_h . k_h * scale)
                const T* attn = F.s_attn + (ut + b) * H;
                const T* ci = F.cell_in + ((t * B + b) * U + u) * H * G;
                T* dci = F.d_cell_in + ((t * B + b) * U + u) * H * G;
                const T* q = F.s_queries + (ut + b) * H * Kk;
                const T* keys = F.keys + (t * B + b) * H * Kk;
                T* dkeys = F.d_keys + (t * B + b) * H * Kk;
                for (int64_t hh = 0; hh < H; ++hh) {
                    T da = T(0);
#pragma omp simd reduction(+ : da)
                    for (int64_t j = 0; j < G; ++j) {
                        dci[hh * G + j] = attn[hh] * dpr[j];
                        da += dpr[j] * ci[hh * G + j];
                    }
                    const T dl = da * attn[hh] * (T(1) - attn[hh]) * scale;
#pragma omp simd
                    for (int64_t j = 0; j < Kk; ++j) {
                        dkeys[hh * Kk + j] += dl * q[hh * Kk + j];
                        dpr[G + hh * Kk + j] = dl * keys[hh * Kk + j];
                    }
                }
                std::memcpy(&h_rows[n * d], F.s_h + (ut + b) * d, sizeof(T) * d);
                rows[n++] = b;
            }
            // proj = b + h W_rec on the active rows: h_{t-1} gets d_proj W_rec^T; W_rec gets h^T d_proj
            gemm<T>(n, d, P, dp.data(), P, F.wt_rec + u * P * d, d, dh_rows.data(), d, false);
            gemm<T>(d, P, n, h_rows.data(), 1, dp.data(), P, F.g_rec + u * d * P, P, true, d);
            for (int64_t k = 0; k < n; ++k) {
                T* gb = F.g_brec + u * D.Pb;
#pragma omp simd
                for (int64_t j = 0; j < D.Pb; ++j) gb[j] += dp[k * P + j];
                T* dst = &dh[(u * B + rows[k]) * d];
#pragma omp simd
                for (int64_t j = 0; j < d; ++j) dst[j] += dh_rows[k * d + j];
            }
        }
        if (F.starts)
            for (int64_t b = 0; b < B; ++b)
                if (F.starts[t * B + b])
                    for (int64_t u = 0; u < U; ++u) {
                        std::memset(&dh[(u * B + b) * d], 0, sizeof(T) * d);
                        std::memset(&dc[(u * B + b) * d], 0, sizeof(T) * d);
                    }
    }
    std::memcpy(F.dh0, dh.data(), sizeof(T) * U * B * d);
    std::memcpy(F.dc0, dc.data(), sizeof(T) * U * B * d);
}

Dims dims_from(const int64_t* v) {
    return Dims{v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11], v[12]};
}

// The dimensions the loops index with must describe a RIMs core; the buffers' sizes are checked against them
// by the caller (rims_native.py) right before each call.
bool valid(const Dims& D) {
    const bool sizes = D.T >= 1 && D.B >= 1 && D.U >= 1 && D.d >= 1 && D.H >= 1 && D.Kk >= 1 && D.kA >= 1;
    const bool flags = (D.comm == 0 || D.comm == 1) && (D.gated == 0 || D.gated == D.comm);
    const bool comm = D.comm ? (D.CH >= 1 && D.dk >= 1 && D.dv >= 1) : (D.CH == 0 && D.dk == 0 && D.dv == 0);
    return sizes && flags && comm && D.Pb >= 0 && D.Pb <= D.P();
}

template <typename T>
int forward_entry(const int64_t* dims, void* const* p) {
    if (!valid(dims_from(dims))) return 1;
    Fwd<T> F;
    const T** in[] = {&F.keys, &F.cell_in, &F.h0, &F.c0, &F.w_rec, &F.b_rec, &F.w_qkv, &F.w_out, &F.b_out};
    int i = 0;
    for (auto ptr : in) *ptr = static_cast<const T*>(p[i++]);
    F.starts = static_cast<const uint8_t*>(p[i++]);
    F.out = static_cast<T*>(p[i++]);
    F.c_n = static_cast<T*>(p[i++]);
    F.active = static_cast<uint8_t*>(p[i++]);
    T** saved[] = {&F.s_h,       &F.s_c,   &F.s_gates, &F.s_tanh_c, &F.s_attn, &F.s_queries,
                   &F.s_comm_in, &F.s_qkv, &F.s_probs, &F.s_read,   &F.s_out};
    for (auto ptr : saved) *ptr = static_cast<T*>(p[i++]);
    forward<T>(dims_from(dims), F);
    return 0;
}

template <typename T>
int backward_entry(const int64_t* dims, void* const* p) {
    if (!valid(dims_from(dims))) return 1;
    Bwd<T> F;
    const T** in[] = {&F.d_out, &F.d_cn, &F.keys, &F.cell_in, &F.wt_rec, &F.wt_qkv, &F.wt_out};
    int i = 0;
    for (auto ptr : in) *ptr = static_cast<const T*>(p[i++]);
    F.starts = static_cast<const uint8_t*>(p[i++]);
    F.active = static_cast<const uint8_t*>(p[i++]);
    const T** saved[] = {&F.s_h,       &F.s_c,   &F.s_gates, &F.s_tanh_c, &F.s_attn, &F.s_queries,
                         &F.s_comm_in, &F.s_qkv, &F.s_probs, &F.s_read,   &F.s_out};
    for (auto ptr : saved) *ptr = static_cast<const T*>(p[i++]);
    T** out[] = {&F.d_keys, &F.d_cell_in, &F.dh0, &F.dc0, &F.g_rec, &F.g_brec, &F.g_qkv, &F.g_out, &F.g_bout};
    for (auto ptr : out) *ptr = static_cast<T*>(p[i++]);
    backward<T>(dims_from(dims), F);
    return 0;
}

}  // namespace

extern "C" {
// Each entry returns 0, or 1 for dimensions that do not describe a core (nothing is read or written then).
int rims_kernel_version() { return 3; }
int rims_forward_f32(const int64_t* dims, void* const* ptrs) { return forward_entry<float>(dims, ptrs); }
int rims_forward_f64(const int64_t* dims, void* const* ptrs) { return forward_entry<double>(dims, ptrs); }
int rims_backward_f32(const int64_t* dims, void* const* ptrs) { return backward_entry<float>(dims, ptrs); }
int rims_backward_f64(const int64_t* dims, void* const* ptrs) { return backward_entry<double>(dims, ptrs); }
}
