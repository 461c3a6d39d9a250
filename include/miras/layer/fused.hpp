// Fused token loop for the chunkable layers (see chunked.hpp): one pass over each row of W per
// token instead of separate passes for the decay, the prediction, the write and the read.
// For row i of W with decay d = exp(g) (a number, or a vector over the key channels), rate eta,
// key k, read key p (k, or the separate read key of Comba) and query s q:
//   decay_then_gradient  r_i = (W_i * d) . p,  W_i <- W_i * d - eta dl/dy_i k
//   gradient_then_decay  r_i = W_i . p,        W_i <- W_i * d - eta dl/dy_i k
//   o_i = W_i . (s q)   (the updated row)
// with dl/dy_i = r_i - v_i for the l2 bias and -v_i for the dot product. The rows are independent,
// so this is exactly the token loop of Layer, reordered.
//
// For float and double the loop moves the decay onto the vectors, which costs O(K) per token
// instead of O(V K):
//   r_i = W_i . p'    with p' = d * p (decay_then_gradient) or p (gradient_then_decay)
//   o_i = W_i . q' + c_i (k . s q)    with q' = d * s q and c_i = -eta dl/dy_i,
// with SIMD packets over the key channels. When a row of W is a power-of-two number of full-width
// packets that fits in the registers (up to 16 with AVX-512, 8 with 16 registers), it stays there
// from its read to the write W_i <- W_i * d + c_i k, so W is read and written once per token.
// Otherwise each block of rows is read once for both dot products and once more for the write.
#pragma once

#include <algorithm>
#include <array>
#include <type_traits>

#include <Eigen/Core>

#include "miras/layer/chunked.hpp"

namespace miras::detail {

/// The vectors one write shares across the rows of W (each of K values).
template <class S>
struct RowWrite {
    const S* predict;  // p': the key the prediction reads, decay applied
    const S* query;    // q': the scaled query, decay applied; read only when `reads`
    const S* key;      // k
    const S* decay;    // d, per key channel (filled with the number for a decay per head)
    S eta;
    S key_query;  // k . s q
    bool reads;
};

// SIMD packet types carry alignment attributes that a template argument drops; Eigen's own
// headers silence the same warning.
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wignored-attributes"
#endif

/// The SIMD packet of the row loop: the widest of at most 256 bits. On Zen 4, which runs a 512-bit
/// operation as two 256-bit halves, 256-bit packets decoded about 7% faster than 512-bit ones.
template <class S>
using RowPacket = std::conditional_t<(sizeof(typename Eigen::internal::packet_traits<S>::type) > 32),
                                     typename Eigen::internal::packet_traits<S>::half,
                                     typename Eigen::internal::packet_traits<S>::type>;

/// Writes rows [first, first + R) of W (row-major, K columns) and their outputs.
template <int R, bool Delta, class S>
void write_row_block(S* W, Index K, Index first, const S* v, const RowWrite<S>& w, S* o) {
    using Packet = RowPacket<S>;
    constexpr Index P = Eigen::internal::unpacket_traits<Packet>::size;
    const Index body = K / P * P;
    std::array<S*, R> rows;
    for (int j = 0; j < R; ++j) rows[j] = W + (first + j) * K;

    Packet r[R], s[R];
    for (int j = 0; j < R; ++j) r[j] = s[j] = Eigen::internal::pset1<Packet>(S(0));
    for (Index c = 0; c < body; c += P) {
        const Packet q = Eigen::internal::ploadu<Packet>(w.query + c);
        if constexpr (Delta) {
            const Packet p = Eigen::internal::ploadu<Packet>(w.predict + c);
            for (int j = 0; j < R; ++j) {
                const Packet x = Eigen::internal::ploadu<Packet>(rows[j] + c);
                r[j] = Eigen::internal::pmadd(x, p, r[j]);
                s[j] = Eigen::internal::pmadd(x, q, s[j]);
            }
        } else {
            for (int j = 0; j < R; ++j) s[j] = Eigen::internal::pmadd(Eigen::internal::ploadu<Packet>(rows[j] + c), q, s[j]);
        }
    }
    std::array<S, R> coefficient;
    for (int j = 0; j < R; ++j) {
        S prediction = Delta ? Eigen::internal::predux(r[j]) : S(0);
        S read = Eigen::internal::predux(s[j]);
        for (Index c = body; c < K; ++c) {
            if constexpr (Delta) prediction += rows[j][c] * w.predict[c];
            read += rows[j][c] * w.query[c];
        }
        const S gradient = prediction - v[first + j];
        coefficient[j] = -w.eta * gradient;
        if (w.reads) o[first + j] = read + coefficient[j] * w.key_query;
    }

    Packet scaled[R];
    for (int j = 0; j < R; ++j) scaled[j] = Eigen::internal::pset1<Packet>(coefficient[j]);
    for (Index c = 0; c < body; c += P) {
        const Packet k = Eigen::internal::ploadu<Packet>(w.key + c);
        const Packet d = Eigen::internal::ploadu<Packet>(w.decay + c);
        for (int j = 0; j < R; ++j) {
            const Packet x = Eigen::internal::ploadu<Packet>(rows[j] + c);
            Eigen::internal::pstoreu(rows[j] + c, Eigen::internal::pmadd(x, d, Eigen::internal::pmul(scaled[j], k)));
        }
    }
    for (Index c = body; c < K; ++c) {
        for (int j = 0; j < R; ++j) rows[j][c] = rows[j][c] * w.decay[c] + coefficient[j] * w.key[c];
    }
}

/// The full-width SIMD packet, for rows that stay in registers.
template <class S>
using WidePacket = typename Eigen::internal::packet_traits<S>::type;

/// Returns how many rows of N packets the register-resident write keeps at once: R (N + 2)
/// registers hold the rows and their two accumulators, and four are left for the packets of p',
/// q', k and d. Returns zero when not even one row fits. With only two left, three rows of eight
/// packets filled the 32 registers of AVX-512, the compiler spilled, and the decode step ran 20%
/// slower. More than two rows of fewer packets were not measured, so two is the most.
template <class S, int N>
constexpr int resident_rows() {
    constexpr int registers = EIGEN_ARCH_DEFAULT_NUMBER_OF_REGISTERS;
    return Eigen::internal::unpacket_traits<WidePacket<S>>::size > 1 ? std::min(2, (registers - 4) / (N + 2)) : 0;
}

/// Writes rows [first, first + R) of W, whose K = N P key channels fit in registers. Each row is
/// loaded once, both dot products and the write use the loaded packets, and the row is stored
/// once: a single pass over W per token, where the general loop reads each row twice.
template <int N, int R, bool Delta, class S>
EIGEN_ALWAYS_INLINE void write_resident_block(S* W, Index first, const S* v, const RowWrite<S>& w, S* o) {
    using Packet = WidePacket<S>;
    constexpr Index P = Eigen::internal::unpacket_traits<Packet>::size, K = N * P;
    Packet x[R][N];
    Packet r[R], s[R];
    for (int j = 0; j < R; ++j) r[j] = s[j] = Eigen::internal::pset1<Packet>(S(0));
    for (int n = 0; n < N; ++n) {
        const Packet q = Eigen::internal::ploadu<Packet>(w.query + n * P);
        for (int j = 0; j < R; ++j) {
            x[j][n] = Eigen::internal::ploadu<Packet>(W + (first + j) * K + n * P);
            s[j] = Eigen::internal::pmadd(x[j][n], q, s[j]);
        }
        if constexpr (Delta) {
            const Packet p = Eigen::internal::ploadu<Packet>(w.predict + n * P);
            for (int j = 0; j < R; ++j) r[j] = Eigen::internal::pmadd(x[j][n], p, r[j]);
        }
    }
    for (int j = 0; j < R; ++j) {
        const S prediction = Delta ? Eigen::internal::predux(r[j]) : S(0);
        const S coefficient = -w.eta * (prediction - v[first + j]);
        if (w.reads) o[first + j] = Eigen::internal::predux(s[j]) + coefficient * w.key_query;
        const Packet scaled = Eigen::internal::pset1<Packet>(coefficient);
        for (int n = 0; n < N; ++n) {
            const Packet k = Eigen::internal::ploadu<Packet>(w.key + n * P);
            const Packet d = Eigen::internal::ploadu<Packet>(w.decay + n * P);
            Eigen::internal::pstoreu(W + (first + j) * K + n * P,
                                     Eigen::internal::pmadd(x[j][n], d, Eigen::internal::pmul(scaled, k)));
        }
    }
}

/// Writes every row of W with the rows in registers when K is N P, 2 N P, 4 N P, ... for a packet
/// count of at most 16 whose rows fit. Returns false, having written nothing, for any other K.
template <int N, bool Delta, class S>
bool write_rows_resident(S* W, Index V, Index K, const S* v, const RowWrite<S>& w, S* o) {
    constexpr int R = resident_rows<S, N>();
    if constexpr (R == 0 || N > 16) {
        return false;
    } else {
        if (K != N * Eigen::internal::unpacket_traits<WidePacket<S>>::size) {
            return write_rows_resident<2 * N, Delta>(W, V, K, v, w, o);
        }
        Index i = 0;
        for (; i + R <= V; i += R) write_resident_block<N, R, Delta>(W, i, v, w, o);
        for (; i < V; ++i) write_resident_block<N, 1, Delta>(W, i, v, w, o);
        return true;
    }
}

#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

/// Writes every row of W (V rows of K) for one pair and, when it reads, the token's output.
template <bool Delta, class S>
void write_rows(S* W, Index V, Index K, const S* v, const RowWrite<S>& w, S* o) {
    // A row that fits in registers stays there between its read and its write. On an Intel
    // Xeon with AVX-512 this single pass decoded Gated DeltaNet (H=16, K=V=128) about 1.5 times
    // as fast as the two passes below, which read each block of rows again from the L1 cache.
    // NOTE: measured on that Xeon only. On Zen 4, which splits 512-bit operations in two, the
    // two passes with 256-bit packets may still be the faster choice.
    if (write_rows_resident<1, Delta>(W, V, K, v, w, o)) return;
    // Eight rows share each load of the vectors and keep 16 accumulators in registers. On Zen 4
    // the decode step ran about 13% faster with blocks of eight rows than of four, and 6% faster
    // than of sixteen.
    constexpr int block = 8;
    Index i = 0;
    for (; i + block <= V; i += block) write_row_block<block, Delta>(W, K, i, v, w, o);
    for (; i < V; ++i) write_row_block<1, Delta>(W, K, i, v, w, o);
}

template <class S, class L, class RetentionBound, class AlgorithmBound>
void forward_head_fused_packets(const L& layer, const Inputs<S>& inputs, const RetentionBound& retention_gates,
                                const AlgorithmBound& algorithm_gates, Index b, Index h, Index T, Mat<S>& W,
                                S* output) {
    constexpr bool delta = std::is_same_v<typename L::bias_type, L2Bias>;
    const Index H = layer.dims().heads, K = layer.dims().key, V = layer.dims().value;
    const S scale = S(layer.query_scale());
    const bool gradient_first = layer.retention().placement == Placement::gradient_then_decay;
    const bool read_key = delta && layer.algorithm().separate_read_key;
    const Index steps = layer.dims().steps_per_token, pairs = T * steps;
    // Workspace for one head, on the stack for the usual head sizes.
    constexpr Index stack_channels = 256;
    std::array<S, 3 * stack_channels> stack;
    std::vector<S> heap;
    S* space = stack.data();
    if (K > stack_channels) {
        heap.resize(static_cast<std::size_t>(3 * K));
        space = heap.data();
    }
    S* const decay = space;
    S* const predict = space + K;
    S* const query = space + 2 * K;

    for (Index step = 0; step < pairs; ++step) {
        const Index t = step / steps, pair = step % steps;
        const Index row = (b * pairs + step) * H + h;
        const S* k = inputs.k.data() + row * K;
        const S* p = read_key ? algorithm_gates.p.at(b, step, h).data : k;
        const bool reads = pair == steps - 1;
        if (pair == 0) {
            const GateValues<S> g = layer.retention().log_decay(retention_gates, b, t, h);
            if (g.scalar()) {
                const S a = math::exp(g[0]);
                for (Index c = 0; c < K; ++c) decay[c] = a;
            } else {
                for (Index c = 0; c < K; ++c) decay[c] = math::exp(g[c]);
            }
        } else {
            for (Index c = 0; c < K; ++c) decay[c] = S(1);
        }
        if constexpr (delta) {
            for (Index c = 0; c < K; ++c) predict[c] = gradient_first ? p[c] : decay[c] * p[c];
        }
        S key_query = S(0);
        if (reads) {
            const S* q = inputs.q.data() + ((b * T + t) * H + h) * K;
            for (Index c = 0; c < K; ++c) {
                key_query += k[c] * (scale * q[c]);
                query[c] = decay[c] * (scale * q[c]);
            }
        } else {
            for (Index c = 0; c < K; ++c) query[c] = S(0);
        }
        const RowWrite<S> write{predict, query, k, decay, algorithm_gates.eta.at(b, step, h)[0], key_query, reads};
        write_rows<delta>(W.data(), V, K, inputs.v.data() + row * V, write, output + ((b * T + t) * H + h) * V);
    }
}

template <class S, class L, class RetentionBound, class AlgorithmBound>
void forward_head_fused(const L& layer, const Inputs<S>& inputs, const RetentionBound& retention_gates,
                        const AlgorithmBound& algorithm_gates, Index b, Index h, Index T, Mat<S>& W, S* output) {
    if constexpr (std::is_floating_point_v<S>) {
        forward_head_fused_packets(layer, inputs, retention_gates, algorithm_gates, b, h, T, W, output);
        return;
    } else {
        constexpr bool delta = std::is_same_v<typename L::bias_type, L2Bias>;
        const Index H = layer.dims().heads, K = layer.dims().key, V = layer.dims().value;
        const S scale = S(layer.query_scale());
        const bool gradient_first = layer.retention().placement == Placement::gradient_then_decay;
        const bool read_key = delta && layer.algorithm().separate_read_key;
        // DeltaProduct writes `steps` pairs per token; the decay acts at the first, the read after the last.
        const Index steps = layer.dims().steps_per_token, pairs = T * steps;
        Vec<S> q(K), decay(K);

        for (Index step = 0; step < pairs; ++step) {
            const Index t = step / steps, pair = step % steps;
            const Index row = (b * pairs + step) * H + h;
            const VecMap<S> k(inputs.k.data() + row * K, K);
            // The key the prediction reads: p for Comba, else k.
            const VecMap<S> p(read_key ? algorithm_gates.p.at(b, step, h).data : inputs.k.data() + row * K, K);
            const S* v = inputs.v.data() + row * V;
            const bool reads = pair == steps - 1;
            if (reads) q = VecMap<S>(inputs.q.data() + ((b * T + t) * H + h) * K, K) * scale;
            S* o = output + ((b * T + t) * H + h) * V;
            const GateValues<S> g = layer.retention().log_decay(retention_gates, b, t, h);
            const S eta = algorithm_gates.eta.at(b, step, h)[0];

            if (pair != 0 || g.scalar()) {
                const S a = pair == 0 ? math::exp(g[0]) : S(1);
                const S prediction_scale = gradient_first ? S(1) : a;
                for (Index i = 0; i < V; ++i) {
                    auto w = W.row(i);
                    S gradient = -v[i];
                    if constexpr (delta) gradient += prediction_scale * w.dot(p.transpose());
                    w = a * w - (eta * gradient) * k.transpose();
                    if (reads) o[i] = w.dot(q.transpose());
                }
            } else {
                // One decay per key channel: W <- W diag(exp(g)).
                for (Index c = 0; c < K; ++c) decay[c] = math::exp(g[c]);
                for (Index i = 0; i < V; ++i) {
                    auto w = W.row(i);
                    S gradient = -v[i];
                    if constexpr (delta) {
                        if (gradient_first) gradient += w.dot(p.transpose());
                        else gradient += w.cwiseProduct(decay.transpose()).dot(p.transpose());
                    }
                    w = w.cwiseProduct(decay.transpose()) - (eta * gradient) * k.transpose();
                    if (reads) o[i] = w.dot(q.transpose());
                }
            }
        }
    }
}

}  // namespace miras::detail
