// Products of the few rows of a chunk or a mini-batch with a state or weight matrix, for the
// chunked forms (chunked.hpp, chunked_dplr.hpp, chunked_mesa.hpp) and the matrix form of the MLP
// memories (minibatch_mlp.hpp). Eigen's general product packs its operands into a panel layout
// before every product, and with the 16 to 64 rows of a chunk or a mini-batch that packing costs
// a large share of the time. On an Intel Xeon with AVX-512, Eigen ran the product of 16 x 64 rows
// with a 256 x 64 W at 52 to 57% of its large GEMM rate.
//
// E = D W (multiply_into) keeps four rows by four packets of E in registers: each k loads four
// packets of row k of W and broadcasts four entries of D. The columns of W go in slabs of four
// packets, which stay in the first-level cache while the rows of D go past. No operand is
// transposed, so the chunked forms keep their states transposed (keys by values) and read them
// this way.
//
// Z = U W^T (multiply_by_transpose_into) takes W where it lies. The rows of U go in groups of one
// SIMD packet (16 floats with AVX-512) into the columns of a small transposed block Ut. Each row j
// of W gives the packet Zt[j] = sum_k W[j, k] Ut[k], one broadcast of W[j, k] and one fused
// multiply-add per k and group, eight rows of W at a time and two groups to a pass over W. A last
// transpose puts the packets back as columns of Z. The sums run over k in the same order for every
// entry, so a row of Z does not depend on the other rows of U.
//
// The writes W <- W diag(d) + A^T B (or diag(d) W + A^T B) sum a block of four rows by four
// packets of A^T B in registers while the n rows of A and B go past, then read, decay and write
// that block of W, so the decay and the write take one pass over W.
//
// The blocks above are sized for the 32 vector registers of AVX-512 (block_rows = 4). With the 16
// registers of AVX2 or SSE they take two rows, and the read of two groups four rows of W.

#pragma once

#include <algorithm>
#include <type_traits>

#include <Eigen/Core>

#include "miras/core/scalar.hpp"

namespace miras::detail {

/// Whether the products here run on the SIMD packets (float and double), else on Eigen's products.
template <class S>
inline constexpr bool packet_product_v = std::is_floating_point_v<S> && Eigen::internal::packet_traits<S>::Vectorizable;

/// Rows of a register block: four for the 32 vector registers of AVX-512, two for the 16 of AVX2
/// and SSE, so that a block of accumulators and its operands fit without spilling.
inline constexpr int block_rows = EIGEN_ARCH_DEFAULT_NUMBER_OF_REGISTERS >= 32 ? 4 : 2;

// SIMD packet types carry alignment attributes that a template argument drops; Eigen's own
// headers silence the same warning.
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wignored-attributes"
#endif

/// Sets dst[c * ld_dst + r] = src[r * ld_src + c] for r < rows and c < cols. Full square blocks of
/// one packet per row go through Eigen's in-register transpose, the edges one number at a time.
template <class S>
void transpose_into(const S* src, Index rows, Index cols, Index ld_src, S* dst, Index ld_dst) {
    if constexpr (!packet_product_v<S>) {
        for (Index r = 0; r < rows; ++r) {
            for (Index c = 0; c < cols; ++c) dst[c * ld_dst + r] = src[r * ld_src + c];
        }
    } else {
        using Packet = typename Eigen::internal::packet_traits<S>::type;
        constexpr Index P = Eigen::internal::unpacket_traits<Packet>::size;
        const Index full_rows = rows / P * P, full_cols = cols / P * P;
        for (Index r = 0; r < full_rows; r += P) {
            for (Index c = 0; c < full_cols; c += P) {
                Eigen::internal::PacketBlock<Packet, P> block;
                for (Index i = 0; i < P; ++i) block.packet[i] = Eigen::internal::ploadu<Packet>(src + (r + i) * ld_src + c);
                Eigen::internal::ptranspose(block);
                for (Index i = 0; i < P; ++i) Eigen::internal::pstoreu(dst + (c + i) * ld_dst + r, block.packet[i]);
            }
        }
        for (Index r = 0; r < rows; ++r) {
            for (Index c = r < full_rows ? full_cols : 0; c < cols; ++c) dst[c * ld_dst + r] = src[r * ld_src + c];
        }
    }
}

/// Computes Zt[g][j] = sum_k W[j, k] Ut[g][k] for the R rows of W from `rows` (row-major, `in`
/// columns, rows ld_w apart) and G groups of transposed rows. Group g of Ut contains `in` packets
/// one after another, from Ut + g * in * P, and group g of Zt receives R packets from
/// Zt + g * out * P. Each broadcast of W[j, k] feeds G fused multiply-adds.
template <int R, int G, class S>
EIGEN_ALWAYS_INLINE void rows_times_packets(const S* rows, Index in, Index ld_w, Index out, const S* Ut, S* Zt) {
    using Packet = typename Eigen::internal::packet_traits<S>::type;
    constexpr Index P = Eigen::internal::unpacket_traits<Packet>::size;
    Packet sum[R][G];
    for (int j = 0; j < R; ++j) {
        for (int g = 0; g < G; ++g) sum[j][g] = Eigen::internal::pset1<Packet>(S(0));
    }
    for (Index k = 0; k < in; ++k) {
        Packet u[G];
        for (int g = 0; g < G; ++g) u[g] = Eigen::internal::ploadu<Packet>(Ut + (g * in + k) * P);
        for (int j = 0; j < R; ++j) {
            const Packet w = Eigen::internal::pset1<Packet>(rows[j * ld_w + k]);
            for (int g = 0; g < G; ++g) sum[j][g] = Eigen::internal::pmadd(w, u[g], sum[j][g]);
        }
    }
    for (int j = 0; j < R; ++j) {
        for (int g = 0; g < G; ++g) Eigen::internal::pstoreu(Zt + (g * out + j) * P, sum[j][g]);
    }
}

/// Runs rows_times_packets over every row of W: blocks of R rows, then the rest one by one.
template <int R, int G, class S>
EIGEN_ALWAYS_INLINE void all_rows_times_packets(const S* W, Index out, Index in, Index ld_w, const S* Ut, S* Zt) {
    using Packet = typename Eigen::internal::packet_traits<S>::type;
    constexpr Index P = Eigen::internal::unpacket_traits<Packet>::size;
    const Index full = out / R * R;
    for (Index j = 0; j < full; j += R) rows_times_packets<R, G>(W + j * ld_w, in, ld_w, out, Ut, Zt + j * P);
    for (Index j = full; j < out; ++j) rows_times_packets<1, G>(W + j * ld_w, in, ld_w, out, Ut, Zt + j * P);
}

/// Workspace of multiply_by_transpose: groups of rows of U transposed, and their products.
template <class S>
struct PacketProductScratch {
    Mat<S> Ut, Zt;
};

/// Sets Z = U W^T for U of n x in and W of out x in, with Z already n x out. U, W and Z are
/// row-major matrices or blocks of one, each row contiguous. For float and double it runs on the
/// SIMD packets above, the rows of U in groups of one packet width and the last group padded with
/// zeros. Two groups share a pass over W, so a W larger than the first-level cache (a 128 x 128
/// state) is read once for up to 2 P rows. For other scalars it is Eigen's product.
template <class S, class URows, class WRows, class ZRows>
void multiply_by_transpose_into(const URows& U, const WRows& W, ZRows&& Z, PacketProductScratch<S>& scratch) {
    static_assert(URows::IsRowMajor && WRows::IsRowMajor && std::decay_t<ZRows>::IsRowMajor,
                  "U, W and Z must be row-major");
    const Index n = U.rows(), in = U.cols(), out = W.rows();
    eigen_assert(W.cols() == in && Z.rows() == n && Z.cols() == out);
    if constexpr (!packet_product_v<S>) {
        (void)scratch;
        Z.noalias() = U * W.transpose();
    } else {
        using Packet = typename Eigen::internal::packet_traits<S>::type;
        constexpr Index P = Eigen::internal::unpacket_traits<Packet>::size;
        constexpr int R = 8;
        // One packet per row of Ut and Zt, each at a multiple of the packet size from the buffer's
        // start. Group g starts at row g * in of Ut and row g * out of Zt.
        scratch.Ut.resize(2 * in, P);
        scratch.Zt.resize(2 * out, P);
        S* Ut = scratch.Ut.data();
        S* Zt = scratch.Zt.data();
        const Index ld_u = U.outerStride(), ld_w = W.outerStride(), ld_z = Z.outerStride();
        for (Index first = 0; first < n; first += 2 * P) {
            const Index rows = std::min(2 * P, n - first), groups = rows > P ? 2 : 1;
            for (Index g = 0; g < groups; ++g) {
                const Index group_rows = std::min(P, rows - g * P);
                if (group_rows < P) scratch.Ut.middleRows(g * in, in).setZero();
                transpose_into(U.data() + (first + g * P) * ld_u, group_rows, in, ld_u, Ut + g * in * P, P);
            }
            if (groups == 2) {
                all_rows_times_packets<2 * block_rows, 2>(W.data(), out, in, ld_w, Ut, Zt);
            } else {
                all_rows_times_packets<R, 1>(W.data(), out, in, ld_w, Ut, Zt);
            }
            for (Index g = 0; g < groups; ++g) {
                const Index group_rows = std::min(P, rows - g * P);
                transpose_into(Zt + g * out * P, out, group_rows, P, Z.data() + (first + g * P) * ld_z, ld_z);
            }
        }
    }
}

/// Sets Z = U W^T as multiply_by_transpose_into does, sizing Z to n x out first.
template <class S>
void multiply_by_transpose(const Mat<S>& U, const Mat<S>& W, Mat<S>& Z, PacketProductScratch<S>& scratch) {
    Z.resize(U.rows(), W.rows());
    multiply_by_transpose_into(U, W, Z, scratch);
}

/// The scaling of W in the write W <- scaled W + A^T B: one number, d[c] for column c
/// (W diag(d)) or d[j] for row j (diag(d) W).
enum class ScaleBy { number, columns, rows };

/// Sets W[j, c] <- W[j, c] s + sum_i A[i, j] B[i, c] for the RJ rows of W from `first_row` and
/// the CP packets of columns from c0, with the sum over the n rows of A and B. The factor s is
/// `scale`, d[c] or d[j], as `by` selects. The sums start from zero and W is read at the end, so
/// that no multiply-add waits for the block of W to arrive from the second-level cache (a 128 x 128
/// state does not fit the first). For n = 16 that took the write from 126 to 144 GFLOP/s on an
/// Intel Xeon with AVX-512.
template <int RJ, int CP, class S>
EIGEN_ALWAYS_INLINE void scaled_add_block(const S* A, Index ld_a, const S* B, Index ld_b, Index n, ScaleBy by,
                                          const S* d, S scale, S* W, Index ld_w, Index first_row, Index c0) {
    using Packet = typename Eigen::internal::packet_traits<S>::type;
    constexpr Index P = Eigen::internal::unpacket_traits<Packet>::size;
    Packet sum[RJ][CP];
    for (int j = 0; j < RJ; ++j) {
        for (int p = 0; p < CP; ++p) sum[j][p] = Eigen::internal::pset1<Packet>(S(0));
    }
    for (Index i = 0; i < n; ++i) {
        Packet b[CP];
        for (int p = 0; p < CP; ++p) b[p] = Eigen::internal::ploadu<Packet>(B + i * ld_b + c0 + p * P);
        for (int j = 0; j < RJ; ++j) {
            const Packet a = Eigen::internal::pset1<Packet>(A[i * ld_a + first_row + j]);
            for (int p = 0; p < CP; ++p) sum[j][p] = Eigen::internal::pmadd(a, b[p], sum[j][p]);
        }
    }
    for (int j = 0; j < RJ; ++j) {
        S* row = W + (first_row + j) * ld_w + c0;
        for (int p = 0; p < CP; ++p) {
            const Packet factor = by == ScaleBy::columns ? Eigen::internal::ploadu<Packet>(d + c0 + p * P)
                                  : by == ScaleBy::rows  ? Eigen::internal::pset1<Packet>(d[first_row + j])
                                                         : Eigen::internal::pset1<Packet>(scale);
            const Packet old = Eigen::internal::ploadu<Packet>(row + p * P);
            Eigen::internal::pstoreu(row + p * P, Eigen::internal::pmadd(old, factor, sum[j][p]));
        }
    }
}

/// Sets W <- (W scaled as `by` selects) + A^T B for A of n x out, B of n x in and W of out x in, all
/// row-major matrices or blocks of one. For float and double it runs on SIMD packets, four rows of
/// W by four packets at a time, so each entry of W is read and written once. For other scalars it
/// is Eigen's product.
template <class S, class ARows, class BRows, class WRows>
void scale_and_add_transpose_product_impl(const ARows& A, const BRows& B, ScaleBy by, const S* d, S scale, WRows& W) {
    static_assert(ARows::IsRowMajor && BRows::IsRowMajor && WRows::IsRowMajor, "A, B and W must be row-major");
    const Index n = A.rows(), out = W.rows(), in = W.cols();
    eigen_assert(A.cols() == out && B.rows() == n && B.cols() == in);
    if constexpr (!packet_product_v<S>) {
        if (by == ScaleBy::columns) W = W * Eigen::Map<const Vec<S>>(d, in).asDiagonal();
        else if (by == ScaleBy::rows) W = Eigen::Map<const Vec<S>>(d, out).asDiagonal() * W;
        else W *= scale;
        W.noalias() += A.transpose() * B;
    } else {
        using Packet = typename Eigen::internal::packet_traits<S>::type;
        constexpr Index P = Eigen::internal::unpacket_traits<Packet>::size;
        constexpr int RJ = block_rows, CP = 4;
        const S* a = A.data();
        const S* b = B.data();
        const Index ld_a = A.outerStride(), ld_b = B.outerStride(), ld_w = W.outerStride();
        const Index wide = in / (CP * P) * (CP * P), packets = in / P * P;
        for (Index j = 0; j < out; j += RJ) {
            const Index last = std::min(j + RJ, out);
            for (Index c = 0; c < wide; c += CP * P) {
                if (last - j == RJ) {
                    scaled_add_block<RJ, CP>(a, ld_a, b, ld_b, n, by, d, scale, W.data(), ld_w, j, c);
                } else {
                    for (Index r = j; r < last; ++r) scaled_add_block<1, CP>(a, ld_a, b, ld_b, n, by, d, scale, W.data(), ld_w, r, c);
                }
            }
            for (Index c = wide; c < packets; c += P) {
                for (Index r = j; r < last; ++r) scaled_add_block<1, 1>(a, ld_a, b, ld_b, n, by, d, scale, W.data(), ld_w, r, c);
            }
            for (Index r = j; r < last; ++r) {
                for (Index c = packets; c < in; ++c) {
                    S factor = scale;
                    if (by == ScaleBy::columns) factor = d[c];
                    if (by == ScaleBy::rows) factor = d[r];
                    // Summed from zero and added to the decayed entry last, as the packets are.
                    S sum = S(0);
                    for (Index i = 0; i < n; ++i) sum += a[i * ld_a + r] * b[i * ld_b + c];
                    W(r, c) = W(r, c) * factor + sum;
                }
            }
        }
    }
}

/// Sets W <- W diag(d) + A^T B (see scale_and_add_transpose_product_impl): the write of n rows into a
/// state whose key channels decay by d.
template <class S, class ARows, class BRows, class WRows>
void scale_and_add_transpose_product(const ARows& A, const BRows& B, const Vec<S>& d, WRows&& W) {
    eigen_assert(d.size() == W.cols());
    scale_and_add_transpose_product_impl(A, B, ScaleBy::columns, d.data(), S(0), W);
}

/// Sets W <- diag(d) W + A^T B: the write of n rows into a transposed state, whose rows are the key
/// channels that decay by d.
template <class S, class ARows, class BRows, class WRows>
void scale_rows_and_add_transpose_product(const ARows& A, const BRows& B, const Vec<S>& d, WRows&& W) {
    eigen_assert(d.size() == W.rows());
    scale_and_add_transpose_product_impl(A, B, ScaleBy::rows, d.data(), S(0), W);
}

/// Sets W <- scale W + A^T B: the write of n rows into a state that decays by one number.
template <class S, class ARows, class BRows, class WRows>
void scale_and_add_transpose_product(const ARows& A, const BRows& B, S scale, WRows&& W) {
    scale_and_add_transpose_product_impl(A, B, ScaleBy::number, static_cast<const S*>(nullptr), scale, W);
}

/// Sets the RJ rows from r0 and CP packets of columns from c0 of E to those of D W, or adds them
/// with Accumulate: E[r, c] (+)= sum_k D[r, k] W[k, c] over the `in` columns of D. One packet load
/// of W per packet of columns and one broadcast of D per row feed RJ x CP fused multiply-adds.
template <int RJ, int CP, bool Accumulate, class S>
EIGEN_ALWAYS_INLINE void product_block(const S* D, Index ld_d, const S* W, Index ld_w, Index in, S* E, Index ld_e,
                                       Index r0, Index c0) {
    using Packet = typename Eigen::internal::packet_traits<S>::type;
    constexpr Index P = Eigen::internal::unpacket_traits<Packet>::size;
    Packet sum[RJ][CP];
    for (int j = 0; j < RJ; ++j) {
        for (int p = 0; p < CP; ++p) {
            sum[j][p] = Accumulate ? Eigen::internal::ploadu<Packet>(E + (r0 + j) * ld_e + c0 + p * P)
                                   : Eigen::internal::pset1<Packet>(S(0));
        }
    }
    for (Index k = 0; k < in; ++k) {
        Packet w[CP];
        for (int p = 0; p < CP; ++p) w[p] = Eigen::internal::ploadu<Packet>(W + k * ld_w + c0 + p * P);
        for (int j = 0; j < RJ; ++j) {
            const Packet d = Eigen::internal::pset1<Packet>(D[(r0 + j) * ld_d + k]);
            for (int p = 0; p < CP; ++p) sum[j][p] = Eigen::internal::pmadd(d, w[p], sum[j][p]);
        }
    }
    for (int j = 0; j < RJ; ++j) {
        for (int p = 0; p < CP; ++p) Eigen::internal::pstoreu(E + (r0 + j) * ld_e + c0 + p * P, sum[j][p]);
    }
}

/// Runs product_block over the rows of E for one block of CP packets of columns: blocks of four
/// rows, then the rest one by one.
template <int CP, bool Accumulate, class S>
EIGEN_ALWAYS_INLINE void product_column_block(const S* D, Index ld_d, const S* W, Index ld_w, Index n, Index in, S* E,
                                              Index ld_e, Index c0) {
    constexpr int RJ = block_rows;
    const Index full = n / RJ * RJ;
    for (Index r = 0; r < full; r += RJ) product_block<RJ, CP, Accumulate>(D, ld_d, W, ld_w, in, E, ld_e, r, c0);
    for (Index r = full; r < n; ++r) product_block<1, CP, Accumulate>(D, ld_d, W, ld_w, in, E, ld_e, r, c0);
}

/// Sets E = D W, or E += D W with `accumulate`, for D of n x in, W of in x out and E of n x out, all
/// row-major matrices or blocks of one. E must not overlap D or W. For float and double it runs on
/// SIMD packets, four rows of E by four packets at a time, with no operand transposed. The columns
/// of W go in slabs of four packets, which stay in the first-level cache while the rows of D go
/// past. For other scalars it is Eigen's product.
template <class DRows, class WRows, class ERows>
void multiply_into(const DRows& D, const WRows& W, ERows&& E, bool accumulate) {
    using S = typename std::decay_t<ERows>::Scalar;
    const Index n = D.rows(), in = D.cols(), out = W.cols();
    eigen_assert(W.rows() == in && E.rows() == n && E.cols() == out);
    if constexpr (!packet_product_v<S>) {
        if (accumulate) E.noalias() += D * W;
        else E.noalias() = D * W;
    } else {
        static_assert(DRows::IsRowMajor && WRows::IsRowMajor && std::decay_t<ERows>::IsRowMajor,
                      "D, W and E must be row-major");
        using Packet = typename Eigen::internal::packet_traits<S>::type;
        constexpr Index P = Eigen::internal::unpacket_traits<Packet>::size;
        constexpr int CP = 4;
        const S* d = D.data();
        const S* w = W.data();
        S* e = E.data();
        eigen_assert(e != d && e != w);
        const Index ld_d = D.outerStride(), ld_w = W.outerStride(), ld_e = E.outerStride();
        const Index wide = out / (CP * P) * (CP * P), packets = out / P * P;
        for (Index c = 0; c < wide; c += CP * P) {
            if (accumulate) product_column_block<CP, true>(d, ld_d, w, ld_w, n, in, e, ld_e, c);
            else product_column_block<CP, false>(d, ld_d, w, ld_w, n, in, e, ld_e, c);
        }
        for (Index c = wide; c < packets; c += P) {
            if (accumulate) product_column_block<1, true>(d, ld_d, w, ld_w, n, in, e, ld_e, c);
            else product_column_block<1, false>(d, ld_d, w, ld_w, n, in, e, ld_e, c);
        }
        for (Index r = 0; r < n; ++r) {
            for (Index c = packets; c < out; ++c) {
                S sum = accumulate ? e[r * ld_e + c] : S(0);
                for (Index k = 0; k < in; ++k) sum += d[r * ld_d + k] * w[k * ld_w + c];
                e[r * ld_e + c] = sum;
            }
        }
    }
}

/// Sets E = D W for D of n x out and W of out x in, both row-major: the backpropagation of n rows
/// through a layer (multiply_into, sizing E first).
template <class S>
void multiply_rows(const Mat<S>& D, const Mat<S>& W, Mat<S>& E) {
    E.resize(D.rows(), W.cols());
    multiply_into(D, W, E, /*accumulate=*/false);
}

/// Sets rows [0, n) of the CP packets of columns from c0 of X to the solution of (I + L) X' = X
/// (see solve_unit_lower_in_place), row by row, each row's packets held in registers while the
/// rows above it are taken off.
template <int CP, class S>
EIGEN_ALWAYS_INLINE void solve_unit_lower_block(const S* A, Index ld_a, S* X, Index ld_x, Index n, Index c0) {
    using Packet = typename Eigen::internal::packet_traits<S>::type;
    constexpr Index P = Eigen::internal::unpacket_traits<Packet>::size;
    for (Index r = 0; r < n; ++r) {
        Packet sum[CP];
        for (int p = 0; p < CP; ++p) sum[p] = Eigen::internal::ploadu<Packet>(X + r * ld_x + c0 + p * P);
        for (Index i = 0; i < r; ++i) {
            const Packet a = Eigen::internal::pset1<Packet>(-A[r * ld_a + i]);
            for (int p = 0; p < CP; ++p) {
                sum[p] = Eigen::internal::pmadd(a, Eigen::internal::ploadu<Packet>(X + i * ld_x + c0 + p * P), sum[p]);
            }
        }
        for (int p = 0; p < CP; ++p) Eigen::internal::pstoreu(X + r * ld_x + c0 + p * P, sum[p]);
    }
}

/// Solves (I + L) X' = X in place, with L the strictly lower triangle of the n x n matrix A and X of
/// n rows, both row-major: forward substitution, each row of X less the multiples of the rows above
/// it. A's diagonal and upper triangle are not read. For float and double the rows go through in
/// blocks of four packets of columns; for other scalars one row operation at a time.
template <class ARows, class XRows>
void solve_unit_lower_in_place(const ARows& A, XRows&& X) {
    using S = typename std::decay_t<XRows>::Scalar;
    const Index n = X.rows(), columns = X.cols();
    eigen_assert(A.rows() >= n && A.cols() >= n);
    if constexpr (!packet_product_v<S>) {
        for (Index r = 1; r < n; ++r) {
            for (Index i = 0; i < r; ++i) X.row(r) -= A(r, i) * X.row(i);
        }
    } else {
        static_assert(ARows::IsRowMajor && std::decay_t<XRows>::IsRowMajor, "A and X must be row-major");
        using Packet = typename Eigen::internal::packet_traits<S>::type;
        constexpr Index P = Eigen::internal::unpacket_traits<Packet>::size;
        constexpr int CP = 4;
        const S* a = A.data();
        S* x = X.data();
        const Index ld_a = A.outerStride(), ld_x = X.outerStride();
        const Index wide = columns / (CP * P) * (CP * P), packets = columns / P * P;
        for (Index c = 0; c < wide; c += CP * P) solve_unit_lower_block<CP>(a, ld_a, x, ld_x, n, c);
        for (Index c = wide; c < packets; c += P) solve_unit_lower_block<1>(a, ld_a, x, ld_x, n, c);
        for (Index r = 1; r < n; ++r) {
            for (Index c = packets; c < columns; ++c) {
                S sum = x[r * ld_x + c];
                for (Index i = 0; i < r; ++i) sum -= a[r * ld_a + i] * x[i * ld_x + c];
                x[r * ld_x + c] = sum;
            }
        }
    }
}

#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

}  // namespace miras::detail
