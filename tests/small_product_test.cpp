// The packet products of the chunked forms and the MLP memories' matrix form against Eigen's
// products. The shapes hit every edge of their blocking: groups of rows shorter than a packet,
// rows of W left over from the blocks, and sizes that are not whole packets.
#include <gtest/gtest.h>

#include <initializer_list>
#include <random>

#include "miras/layer/small_product.hpp"

namespace miras {
namespace {

template <class S>
Mat<S> random_matrix(Index rows, Index cols, std::mt19937& rng) {
    std::uniform_real_distribution<double> uniform(-1.0, 1.0);
    Mat<S> m(rows, cols);
    for (Index i = 0; i < m.size(); ++i) m.data()[i] = S(uniform(rng));
    return m;
}

/// Calls check(n, out, in) for every combination of the three lists of sizes, and returns the
/// number of calls.
template <class F>
int for_each_shape(std::initializer_list<Index> ns, std::initializer_list<Index> outs, std::initializer_list<Index> ins,
                   F&& check) {
    int calls = 0;
    for (Index n : ns) {
        for (Index out : outs) {
            for (Index in : ins) {
                check(n, out, in);
                ++calls;
            }
        }
    }
    return calls;
}

template <class S>
void expect_matches_eigen(double tolerance) {
    std::mt19937 rng(7);
    detail::PacketProductScratch<S> scratch;
    Mat<S> Z;
    // Rows of U go in pairs of groups of one packet: 17, 31 and 33 end on a partial group, 48 on a
    // single full one after a pair.
    const int checked = for_each_shape({1, 3, 8, 15, 16, 17, 31, 33, 48}, {1, 7, 8, 9, 64, 70}, {1, 5, 16, 64, 70},
                                       [&](Index n, Index out, Index in) {
        const Mat<S> U = random_matrix<S>(n, in, rng), W = random_matrix<S>(out, in, rng);
        detail::multiply_by_transpose(U, W, Z, scratch);
        const Mat<S> want = U * W.transpose();
        ASSERT_EQ(Z.rows(), n);
        ASSERT_EQ(Z.cols(), out);
        EXPECT_LE((Z - want).cwiseAbs().maxCoeff(), tolerance * static_cast<double>(in))
            << "n=" << n << " in=" << in << " out=" << out;
    });
    EXPECT_EQ(checked, 9 * 6 * 5);
}

TEST(PacketProduct, MatchesEigenInFloat) { expect_matches_eigen<float>(1e-6); }
TEST(PacketProduct, MatchesEigenInDouble) { expect_matches_eigen<double>(1e-15); }

template <class S>
void expect_scaled_write_matches_eigen(double tolerance) {
    std::mt19937 rng(13);
    const int checked = for_each_shape({1, 5, 16, 17}, {1, 3, 4, 7, 64, 66}, {1, 5, 16, 64, 70, 128},
                                       [&](Index n, Index out, Index in) {
        // A and B are blocks of rows inside larger matrices, as the chunks of a sequence are.
        const Mat<S> A_rows = random_matrix<S>(n + 2, out, rng), B_rows = random_matrix<S>(n + 2, in, rng);
        const auto A = A_rows.middleRows(1, n);
        const auto B = B_rows.middleRows(1, n);
        const Mat<S> W = random_matrix<S>(out, in, rng);
        const Vec<S> d = random_matrix<S>(in, 1, rng).col(0);
        const S scale = S(0.75);

        const Vec<S> d_rows = random_matrix<S>(out, 1, rng).col(0);
        Mat<S> by_column = W, by_number = W, by_row = W;
        detail::scale_and_add_transpose_product(A, B, d, by_column);
        detail::scale_and_add_transpose_product(A, B, scale, by_number);
        detail::scale_rows_and_add_transpose_product(A, B, d_rows, by_row);
        const Mat<S> want_column = W * d.asDiagonal() + A.transpose() * B;
        const Mat<S> want_number = scale * W + A.transpose() * B;
        const Mat<S> want_row = d_rows.asDiagonal() * W + A.transpose() * B;
        const double bound = tolerance * static_cast<double>(n + 1);
        EXPECT_LE((by_row - want_row).cwiseAbs().maxCoeff(), bound) << "row scales, n=" << n << " out=" << out << " in=" << in;
        EXPECT_LE((by_column - want_column).cwiseAbs().maxCoeff(), bound)
            << "column scales, n=" << n << " out=" << out << " in=" << in;
        EXPECT_LE((by_number - want_number).cwiseAbs().maxCoeff(), bound)
            << "one scale, n=" << n << " out=" << out << " in=" << in;
    });
    EXPECT_EQ(checked, 4 * 6 * 6);
}

TEST(PacketProduct, ScaledWriteMatchesEigenInFloat) { expect_scaled_write_matches_eigen<float>(1e-6); }
TEST(PacketProduct, ScaledWriteMatchesEigenInDouble) { expect_scaled_write_matches_eigen<double>(1e-15); }

template <class S>
void expect_row_product_matches_eigen(double tolerance) {
    std::mt19937 rng(17);
    Mat<S> E;
    const int checked = for_each_shape({1, 5, 16, 17}, {1, 7, 64, 70}, {1, 5, 16, 64, 70, 256},
                                       [&](Index n, Index out, Index in) {
        const Mat<S> D = random_matrix<S>(n, out, rng), W = random_matrix<S>(out, in, rng);
        detail::multiply_rows(D, W, E);
        const Mat<S> want = D * W;
        ASSERT_EQ(E.rows(), n);
        ASSERT_EQ(E.cols(), in);
        EXPECT_LE((E - want).cwiseAbs().maxCoeff(), tolerance * static_cast<double>(out))
            << "n=" << n << " out=" << out << " in=" << in;
    });
    EXPECT_EQ(checked, 4 * 4 * 6);
}

TEST(PacketProduct, RowProductMatchesEigenInFloat) { expect_row_product_matches_eigen<float>(1e-6); }
TEST(PacketProduct, RowProductMatchesEigenInDouble) { expect_row_product_matches_eigen<double>(1e-15); }

// U, W and Z as blocks inside larger matrices, whose rows are longer than the block: the products
// must read and write the block alone.
TEST(PacketProduct, StridedBlocksMatchEigen) {
    std::mt19937 rng(19);
    detail::PacketProductScratch<float> scratch;
    const Mat<float> U_all = random_matrix<float>(20, 80, rng), W_all = random_matrix<float>(72, 70, rng);
    const auto U = U_all.block(2, 5, 17, 64);
    const auto W = W_all.block(1, 3, 70, 64);
    Mat<float> Z_all = Mat<float>::Constant(21, 90, 7.0f);
    auto Z = Z_all.block(3, 4, 17, 70);
    detail::multiply_by_transpose_into(U, W, Z, scratch);
    const Mat<float> want = U * W.transpose();
    EXPECT_LE((Mat<float>(Z) - want).cwiseAbs().maxCoeff(), 1e-4f);
    for (Index r = 0; r < Z_all.rows(); ++r) {
        for (Index c = 0; c < Z_all.cols(); ++c) {
            const bool inside = r >= 3 && r < 20 && c >= 4 && c < 74;
            if (!inside) EXPECT_EQ(Z_all(r, c), 7.0f) << "row " << r << " column " << c;
        }
    }

    const Mat<float> A_all = random_matrix<float>(18, 50, rng), B_all = random_matrix<float>(18, 90, rng);
    const auto A = A_all.block(1, 3, 16, 40);
    const auto B = B_all.block(1, 6, 16, 72);
    const Mat<float> start = random_matrix<float>(42, 80, rng);
    Mat<float> written_all = start;
    detail::scale_and_add_transpose_product(A, B, 0.5f, written_all.block(1, 2, 40, 72));
    const Mat<float> expected = 0.5f * start.block(1, 2, 40, 72) + A.transpose() * B;
    EXPECT_LE((Mat<float>(written_all.block(1, 2, 40, 72)) - expected).cwiseAbs().maxCoeff(), 1e-4f);
    for (Index r = 0; r < written_all.rows(); ++r) {
        for (Index c = 0; c < written_all.cols(); ++c) {
            const bool inside = r >= 1 && r < 41 && c >= 2 && c < 74;
            if (!inside) EXPECT_EQ(written_all(r, c), start(r, c)) << "row " << r << " column " << c;
        }
    }
}

// The forward substitution and the accumulated product of the chunks, on blocks, against Eigen's
// triangular solve and product.
template <class S>
void expect_solve_and_square_product_match_eigen(double tolerance) {
    std::mt19937 rng(23);
    const int checked = for_each_shape({1, 2, 15, 16, 17, 33}, {1}, {1, 5, 16, 64, 70, 128}, [&](Index n, Index, Index in) {
        // Entries of A scaled by 1/n keep the solution of the unit lower system near the right side.
        const Mat<S> A_all = random_matrix<S>(n + 3, n + 4, rng) / S(n);
        const auto A = A_all.block(1, 2, n, n);
        const Mat<S> X_all = random_matrix<S>(n + 2, in + 3, rng);
        Mat<S> solved_all = X_all;
        detail::solve_unit_lower_in_place(A, solved_all.block(1, 1, n, in));
        Mat<S> want = X_all.block(1, 1, n, in);
        Mat<S>(A).template triangularView<Eigen::UnitLower>().solveInPlace(want);
        EXPECT_LE((Mat<S>(solved_all.block(1, 1, n, in)) - want).cwiseAbs().maxCoeff(), tolerance * static_cast<double>(n))
            << "solve, n=" << n << " columns=" << in;
        EXPECT_EQ(solved_all.col(0), X_all.col(0)) << "solve wrote left of its block, n=" << n;
        EXPECT_EQ(solved_all.rightCols(2), X_all.rightCols(2)) << "solve wrote right of its block, n=" << n;
        EXPECT_EQ(solved_all.row(0), X_all.row(0)) << "solve wrote above its block, n=" << n;
        EXPECT_EQ(solved_all.bottomRows(1), X_all.bottomRows(1)) << "solve wrote below its block, n=" << n;

        Mat<S> sum_all = X_all;
        const Mat<S> U = random_matrix<S>(n, in, rng);
        detail::multiply_into(A, U, sum_all.block(1, 1, n, in), /*accumulate=*/true);
        const Mat<S> want_sum = X_all.block(1, 1, n, in) + A * U;
        EXPECT_EQ(sum_all.rightCols(2), X_all.rightCols(2)) << "product wrote right of its block, n=" << n;
        EXPECT_EQ(sum_all.bottomRows(1), X_all.bottomRows(1)) << "product wrote below its block, n=" << n;
        EXPECT_LE((Mat<S>(sum_all.block(1, 1, n, in)) - want_sum).cwiseAbs().maxCoeff(), tolerance * static_cast<double>(n))
            << "square product, n=" << n << " columns=" << in;
    });
    EXPECT_EQ(checked, 6 * 6);
}

TEST(PacketProduct, SolveAndSquareProductMatchEigenInFloat) { expect_solve_and_square_product_match_eigen<float>(1e-6); }
TEST(PacketProduct, SolveAndSquareProductMatchEigenInDouble) {
    expect_solve_and_square_product_match_eigen<double>(1e-15);
}

// Each row of Z is the same whether U has one row or many, so the product of a row does not
// depend on how many rows share its group (a partial last chunk, for one).
TEST(PacketProduct, RowsDoNotDependOnTheirGroup) {
    std::mt19937 rng(11);
    detail::PacketProductScratch<float> scratch;
    const Mat<float> U = random_matrix<float>(37, 64, rng), W = random_matrix<float>(70, 64, rng);
    Mat<float> all, single;
    detail::multiply_by_transpose(U, W, all, scratch);
    for (Index r = 0; r < U.rows(); ++r) {
        const Mat<float> row = U.row(r);
        detail::multiply_by_transpose(row, W, single, scratch);
        ASSERT_EQ(single.rows(), 1);
        for (Index c = 0; c < W.rows(); ++c) EXPECT_EQ(single(0, c), all(r, c)) << "row " << r << " column " << c;
    }
}

}  // namespace
}  // namespace miras
