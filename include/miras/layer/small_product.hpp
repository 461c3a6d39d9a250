// Products of the few rows of a mini-batch with a weight matrix, Z = U W^T, for the matrix form of
// the MLP memories (minibatch_mlp.hpp). Eigen's general product packs W into a panel layout before
// every product, and with the 16 rows of a mini-batch that packing takes most of the time. On an
// Intel Xeon with AVX-512, Eigen ran the product of 16 x 64 rows with a 256 x 64 W at 52 to 57% of
// its large GEMM rate, and the loop below at about 95%. Here W is read where it lies instead. The
// rows of U go in groups of one SIMD packet (16 floats with AVX-512) into the columns of a small
// transposed block Ut. Each row j of W gives the packet Zt[j] = sum_k W[j, k] Ut[k], one broadcast
// of W[j, k] and one fused multiply-add per k, eight rows of W at a time. A last transpose puts
// the packets back as columns of Z. The sums run over k in the same order for every entry, so a
// row of Z does not depend on the other rows of U.
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

/// Computes Zt[j] = sum_k W[j, k] Ut[k] for the R rows of W from `rows` (row-major, `in` columns).
/// Ut contains `in` packets one after another, and Zt receives R.
template <int R, class S>
EIGEN_ALWAYS_INLINE void rows_times_packets(const S* rows, Index in, const S* Ut, S* Zt) {
    using Packet = typename Eigen::internal::packet_traits<S>::type;
    constexpr Index P = Eigen::internal::unpacket_traits<Packet>::size;
    Packet sum[R];
    for (int j = 0; j < R; ++j) sum[j] = Eigen::internal::pset1<Packet>(S(0));
    for (Index k = 0; k < in; ++k) {
        const Packet u = Eigen::internal::pload<Packet>(Ut + k * P);
        for (int j = 0; j < R; ++j) sum[j] = Eigen::internal::pmadd(Eigen::internal::pset1<Packet>(rows[j * in + k]), u, sum[j]);
    }
    for (int j = 0; j < R; ++j) Eigen::internal::pstore(Zt + j * P, sum[j]);
}

/// Workspace of multiply_by_transpose: one group of rows of U transposed, and its products.
template <class S>
struct PacketProductScratch {
    Mat<S> Ut, Zt;
};

/// Sets Z = U W^T for U of n x in and W of out x in, both row-major. For float and double it runs
/// on the SIMD packets above, one group of rows of U per packet width, the last group padded with
/// zeros. For other scalars it is Eigen's product.
template <class S>
void multiply_by_transpose(const Mat<S>& U, const Mat<S>& W, Mat<S>& Z, PacketProductScratch<S>& scratch) {
    if constexpr (!packet_product_v<S>) {
        (void)scratch;
        Z.noalias() = U * W.transpose();
    } else {
        using Packet = typename Eigen::internal::packet_traits<S>::type;
        constexpr Index P = Eigen::internal::unpacket_traits<Packet>::size;
        constexpr int R = 8;
        const Index n = U.rows(), in = U.cols(), out = W.rows();
        eigen_assert(W.cols() == in);
        Z.resize(n, out);
        // Rows of P numbers, which keeps every packet of Ut and Zt on the alignment of its buffer.
        scratch.Ut.resize(in, P);
        scratch.Zt.resize(out, P);
        S* Ut = scratch.Ut.data();
        S* Zt = scratch.Zt.data();
        const Index full = out / R * R;
        for (Index first = 0; first < n; first += P) {
            const Index rows = std::min(P, n - first);
            if (rows < P) scratch.Ut.setZero();
            transpose_into(&U(first, 0), rows, in, Index(U.outerStride()), Ut, P);
            for (Index j = 0; j < full; j += R) rows_times_packets<R>(W.data() + j * in, in, Ut, Zt + j * P);
            for (Index j = full; j < out; ++j) rows_times_packets<1>(W.data() + j * in, in, Ut, Zt + j * P);
            transpose_into(Zt, out, rows, P, Z.data() + first * out, out);
        }
    }
}

#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

}  // namespace miras::detail
