// Softmax cross-entropy with ignored positions: the mean of -log softmax(logits)[y] over the rows
// whose label is not -100, and its gradient (softmax - onehot(y)) / M. As PyTorch's cross_entropy
// with ignore_index = -100, the MQAR loss of Zoology. The head is evaluated at supervised rows only.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "miras/nn/param.hpp"

namespace miras::nn {

inline constexpr std::int32_t ignore_index = -100;

/// The rows whose label is not ignore_index, and their labels.
struct SupervisedRows {
    std::vector<Index> rows;
    std::vector<std::int32_t> targets;
};

inline SupervisedRows supervised_rows(const std::vector<std::int32_t>& labels) {
    SupervisedRows s;
    for (std::size_t i = 0; i < labels.size(); ++i) {
        if (labels[i] == ignore_index) continue;
        s.rows.push_back(static_cast<Index>(i));
        s.targets.push_back(labels[i]);
    }
    return s;
}

/// Returns the rows `rows` of H.
template <class S>
Mat<S> gather_rows(const Mat<S>& h, const std::vector<Index>& rows) {
    Mat<S> out(static_cast<Index>(rows.size()), h.cols());
    for (std::size_t i = 0; i < rows.size(); ++i) out.row(static_cast<Index>(i)) = h.row(rows[i]);
    return out;
}

/// Adds the rows of `part` into the rows `rows` of `full`.
template <class S>
void scatter_add_rows(Mat<S>& full, const std::vector<Index>& rows, const Mat<S>& part) {
    for (std::size_t i = 0; i < rows.size(); ++i) full.row(rows[i]) += part.row(static_cast<Index>(i));
}

template <class S>
struct CrossEntropy {
    double loss = 0;
    Mat<S> dlogits;  ///< d loss / d logits, [M, V]
};

/// Mean cross-entropy of logits [M, V] against targets in 0..V-1 (M >= 1).
template <class S>
CrossEntropy<S> softmax_cross_entropy(const Mat<S>& logits, const std::vector<std::int32_t>& targets) {
    const Index M = logits.rows(), V = logits.cols();
    if (static_cast<Index>(targets.size()) != M || M == 0) {
        throw InputError("softmax_cross_entropy: " + std::to_string(targets.size()) + " targets for " +
                         std::to_string(M) + " rows of logits; need one per row and at least one row");
    }
    CrossEntropy<S> out;
    out.dlogits.resize(M, V);
    for (Index r = 0; r < M; ++r) {
        const std::int32_t y = targets[static_cast<std::size_t>(r)];
        if (y < 0 || y >= V) {
            throw InputError("softmax_cross_entropy: target " + std::to_string(y) + " of row " + std::to_string(r) +
                             " is outside 0.." + std::to_string(V - 1));
        }
        const S top = logits.row(r).maxCoeff();
        const auto e = (logits.row(r).array() - top).exp().eval();
        const S total = e.sum();
        out.loss += static_cast<double>(std::log(total) + top - logits(r, y));
        out.dlogits.row(r) = (e / total).matrix();
        out.dlogits(r, y) -= S(1);
    }
    out.loss /= static_cast<double>(M);
    out.dlogits /= S(M);
    return out;
}

}  // namespace miras::nn
