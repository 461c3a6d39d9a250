// Token embedding H = E[tokens] with E [V, d], and the output head tied to it, logits = H E^T
// (Zoology's language model ties its head to the embedding). Backward passes add into E.grad.
#pragma once

#include <cstdint>
#include <vector>

#include "miras/nn/param.hpp"

namespace miras::nn {

template <class S>
struct Embedding {
    Param<S> table;  ///< E [V, d]

    Embedding() = default;
    explicit Embedding(Mat<S> e) : table(std::move(e)) {}

    Index vocab() const { return table.value.rows(); }
    Index dim() const { return table.value.cols(); }

    /// Returns the rows of E for `tokens`, [N, d]; a token outside 0..V-1 raises InputError.
    Mat<S> forward(const std::vector<std::int32_t>& tokens) const {
        Mat<S> h(static_cast<Index>(tokens.size()), dim());
        for (std::size_t i = 0; i < tokens.size(); ++i) {
            if (tokens[i] < 0 || tokens[i] >= vocab()) {
                throw InputError("Embedding: token " + std::to_string(tokens[i]) + " at position " +
                                 std::to_string(i) + " is outside 0.." + std::to_string(vocab() - 1));
            }
            h.row(static_cast<Index>(i)) = table.value.row(tokens[i]);
        }
        return h;
    }

    /// Adds dH [N, d] into the rows of E.grad that `tokens` selected.
    void backward(const std::vector<std::int32_t>& tokens, const Mat<S>& dh) {
        expect_cols(dh, dim(), "Embedding gradient");
        for (std::size_t i = 0; i < tokens.size(); ++i) table.grad.row(tokens[i]) += dh.row(static_cast<Index>(i));
    }

    /// Returns logits H E^T, [N, V], for hidden states H [N, d].
    Mat<S> head(const Mat<S>& h) const {
        expect_cols(h, dim(), "Tied head input");
        return h * table.value.transpose();
    }

    /// Adds dLogits^T H into E.grad and returns dH = dLogits E.
    Mat<S> head_backward(const Mat<S>& h, const Mat<S>& dlogits) {
        expect_cols(dlogits, vocab(), "Tied head gradient");
        table.grad.noalias() += dlogits.transpose() * h;
        return dlogits * table.value;
    }
};

}  // namespace miras::nn
