// Products of the few rows of a chunk or a mini-batch with a state or weight matrix, for the
// chunked forms (chunked.hpp, chunked_dplr.hpp, chunked_mesa.hpp) and the matrix form of the MLP
// memories (minibatch_mlp.hpp). Eigen's general product packs its operands into a panel layout
// before every product, and with the 16 to 64 rows of a chunk or a mini-batch that packing costs
// a large share of the time. On an Intel Xeon with AVX-512, Eigen ran the product of 16 x 64 rows
// with a 256 x 64 W at 52 to 57% of its large GEMM rate.
//
// The reads Z = U W^T take W where it lies. The rows of U go in groups of one SIMD packet (16
// floats with AVX-512) into the columns of a small transposed block Ut. Each row j of W gives the
// packet Zt[j] = sum_k W[j, k] Ut[k], one broadcast of W[j, k] and one fused multiply-add per k,
// eight rows of W at a time. A last transpose puts the packets back as columns of Z. The sums run
// over k in the same order for every entry, so a row of Z does not depend on the other rows of U.
//
// The writes W <- W diag(d) + A^T B keep a block of four rows by four packets of W in registers
// while the n rows of A and B go past, so the decay and the write take one pass over W.
#pragma once

#include <algorithm>
#include <type_traits>

#include <Eigen/Core>

#include "miras/core/scalar.hpp"

namespace miras::detail {

/// Whether Z = U W^T runs on the SIMD packets here (float and double), else on Eigen's product.
template <class S>
inline constexpr bool packet_product_v = std::is_floating_point_v<S> && Eigen::internal::packet_traits<S>::Vectorizable;

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

/// Computes Zt[j] = sum_k W[j, k] Ut[k] for the R rows of W from `rows` (row-major, `in` columns,
/// rows ld_w apart). Ut contains `in` packets one after another, and Zt receives R.
template <int R, class S>
EIGEN_ALWAYS_INLINE void rows_times_packets(const S* rows, Index in, Index ld_w, const S* Ut, S* Zt) {
    using Packet = typename Eigen::internal::packet_traits<S>::type;
    constexpr Index P = Eigen::internal::unpacket_traits<Packet>::size;
    Packet sum[R];
    for (int j = 0; j < R; ++j) sum[j] = Eigen::internal::pset1<Packet>(S(0));
    for (Index k = 0; k < in; ++k) {
        const Packet u = Eigen::internal::ploadu<Packet>(Ut + k * P);
        for (int j = 0; j < R; ++j) sum[j] = Eigen::internal::pmadd(Eigen::internal::pset1<Packet>(rows[j * ld_w + k]), u, sum[j]);
    }
    for (int j = 0; j < R; ++j) Eigen::internal::pstoreu(Zt + j * P, sum[j]);
}

/// Workspace of multiply_by_transpose: one group of rows of U transposed, and its products.
template <class S>
struct PacketProductScratch {
    Mat<S> Ut, Zt;
};

/// Sets Z = U W^T for U of n x in and W of out x in, with Z already n x out. U, W and Z are
/// row-major matrices or blocks of one, each row contiguous. For float and double it
/// runs on the SIMD packets above, one group of rows of U per packet width, the last group padded
/// with zeros. For other scalars it is Eigen's product.
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
        // One packet per row of Ut and Zt, each at a multiple of the packet size from the buffer's start.
        scratch.Ut.resize(in, P);
        scratch.Zt.resize(out, P);
        S* Ut = scratch.Ut.data();
        S* Zt = scratch.Zt.data();
        const Index full = out / R * R;
        const Index ld_u = U.outerStride(), ld_w = W.outerStride(), ld_z = Z.outerStride();
        for (Index first = 0; first < n; first += P) {
            const Index rows = std::min(P, n - first);
            if (rows < P) scratch.Ut.setZero();
            transpose_into(U.data() + first * ld_u, rows, in, ld_u, Ut, P);
            for (Index j = 0; j < full; j += R) rows_times_packets<R>(W.data() + j * ld_w, in, ld_w, Ut, Zt + j * P);
            for (Index j = full; j < out; ++j) rows_times_packets<1>(W.data() + j * ld_w, in, ld_w, Ut, Zt + j * P);
            transpose_into(Zt, out, rows, P, Z.data() + first * ld_z, ld_z);
        }
    }
}

/// Sets Z = U W^T as multiply_by_transpose_into does, sizing Z to n x out first.
template <class S>
void multiply_by_transpose(const Mat<S>& U, const Mat<S>& W, Mat<S>& Z, PacketProductScratch<S>& scratch) {
    Z.resize(U.rows(), W.rows());
    multiply_by_transpose_into(U, W, Z, scratch);
}

/// Sets W[j, c] <- W[j, c] d[c] + sum_i A[i, j] B[i, c] for the RJ rows of W from `first_row` and
/// the CP packets of columns from c0, with the sum over the n rows of A and B. A null d scales
/// every column by `scale`.
template <int RJ, int CP, class S>
EIGEN_ALWAYS_INLINE void scaled_add_block(const S* A, Index ld_a, const S* B, Index ld_b, Index n, const S* d, S scale,
                                          S* W, Index ld_w, Index first_row, Index c0) {
    using Packet = typename Eigen::internal::packet_traits<S>::type;
    constexpr Index P = Eigen::internal::unpacket_traits<Packet>::size;
    Packet sum[RJ][CP], column_scale[CP];
    for (int p = 0; p < CP; ++p) {
        column_scale[p] = d ? Eigen::internal::ploadu<Packet>(d + c0 + p * P) : Eigen::internal::pset1<Packet>(scale);
    }
    for (int j = 0; j < RJ; ++j) {
        const S* row = W + (first_row + j) * ld_w + c0;
        for (int p = 0; p < CP; ++p) sum[j][p] = Eigen::internal::pmul(Eigen::internal::ploadu<Packet>(row + p * P), column_scale[p]);
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
        for (int p = 0; p < CP; ++p) Eigen::internal::pstoreu(row + p * P, sum[j][p]);
    }
}

/// Sets W <- W diag(d) + A^T B for A of n x out, B of n x in and W of out x in, all row-major
/// matrices or blocks of one. A null d scales every column by `scale`. For float and double it
/// runs on SIMD packets, four rows of W by four packets at a time, so each entry of W is read and
/// written once. For other scalars it is Eigen's product.
template <class S, class ARows, class BRows, class WRows>
void scale_and_add_transpose_product_impl(const ARows& A, const BRows& B, const S* d, S scale, WRows& W) {
    static_assert(ARows::IsRowMajor && BRows::IsRowMajor && WRows::IsRowMajor, "A, B and W must be row-major");
    const Index n = A.rows(), out = W.rows(), in = W.cols();
    eigen_assert(A.cols() == out && B.rows() == n && B.cols() == in);
    if constexpr (!packet_product_v<S>) {
        if (d) W = W * Eigen::Map<const Vec<S>>(d, in).asDiagonal();
        else W *= scale;
        W.noalias() += A.transpose() * B;
    } else {
        using Packet = typename Eigen::internal::packet_traits<S>::type;
        constexpr Index P = Eigen::internal::unpacket_traits<Packet>::size;
        constexpr int RJ = 4, CP = 4;
        const S* a = A.data();
        const S* b = B.data();
        const Index ld_a = A.outerStride(), ld_b = B.outerStride(), ld_w = W.outerStride();
        const Index wide = in / (CP * P) * (CP * P), packets = in / P * P;
        for (Index j = 0; j < out; j += RJ) {
            const Index last = std::min(j + RJ, out);
            for (Index c = 0; c < wide; c += CP * P) {
                if (last - j == RJ) {
                    scaled_add_block<RJ, CP>(a, ld_a, b, ld_b, n, d, scale, W.data(), ld_w, j, c);
                } else {
                    for (Index r = j; r < last; ++r) scaled_add_block<1, CP>(a, ld_a, b, ld_b, n, d, scale, W.data(), ld_w, r, c);
                }
            }
            for (Index c = wide; c < packets; c += P) {
                for (Index r = j; r < last; ++r) scaled_add_block<1, 1>(a, ld_a, b, ld_b, n, d, scale, W.data(), ld_w, r, c);
            }
            for (Index r = j; r < last; ++r) {
                for (Index c = packets; c < in; ++c) {
                    S sum = W(r, c) * (d ? d[c] : scale);
                    for (Index i = 0; i < n; ++i) sum += a[i * ld_a + r] * b[i * ld_b + c];
                    W(r, c) = sum;
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
    scale_and_add_transpose_product_impl(A, B, d.data(), S(0), W);
}

/// Sets W <- scale W + A^T B: the write of n rows into a state that decays by one number.
template <class S, class ARows, class BRows, class WRows>
void scale_and_add_transpose_product(const ARows& A, const BRows& B, S scale, WRows&& W) {
    scale_and_add_transpose_product_impl(A, B, static_cast<const S*>(nullptr), scale, W);
}

/// Sets E = D W for D of n x out and W of out x in, both row-major: the backpropagation of n rows
/// through a layer. For float and double, D^T goes into the scratch, and E = (D^T)^T W runs as the
/// write above from E = 0. For other scalars it is Eigen's product.
template <class S>
void multiply_rows(const Mat<S>& D, const Mat<S>& W, Mat<S>& E, PacketProductScratch<S>& scratch) {
    if constexpr (!packet_product_v<S>) {
        (void)scratch;
        E.noalias() = D * W;
    } else {
        const Index n = D.rows(), out = D.cols();
        eigen_assert(W.rows() == out);
        scratch.Ut.resize(out, n);
        transpose_into(D.data(), n, out, out, scratch.Ut.data(), n);
        eigen_assert(E.data() != D.data() && E.data() != W.data());
        E.setZero(n, W.cols());
        scale_and_add_transpose_product(scratch.Ut, W, S(0), E);
    }
}

/// Sets O += M U for M of n x n and U of n x in, O and U row-major: the reads within a chunk.
/// Mt is scratch for M^T, so that the sum runs as the write above with a scale of one.
template <class S, class MRows, class URows, class ORows>
void add_square_product(const MRows& M, const URows& U, ORows&& O, Mat<S>& Mt) {
    if constexpr (!packet_product_v<S>) {
        (void)Mt;
        O.noalias() += M * U;
    } else {
        const Index n = M.rows();
        Mt.resize(n, n);
        Mt = M.transpose();
        scale_and_add_transpose_product(Mt, U, S(1), O);
    }
}

/// Solves (I + L) X' = X in place, with L the strictly lower triangle of the n x n matrix A and X of
/// n rows: forward substitution, each row of X less the multiples of the rows above it. A's
/// diagonal and upper triangle are not read.
template <class ARows, class XRows>
void solve_unit_lower_in_place(const ARows& A, XRows&& X) {
    for (Index r = 1; r < X.rows(); ++r) {
        for (Index i = 0; i < r; ++i) X.row(r) -= A(r, i) * X.row(i);
    }
}

#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

}  // namespace miras::detail
