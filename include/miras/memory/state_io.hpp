// Named matrices through which a component saves and restores its part of a head's state.
#pragma once

#include <map>
#include <string>

#include "miras/core/error.hpp"
#include "miras/core/scalar.hpp"

namespace miras {

template <class S>
using NamedMatrices = std::map<std::string, Mat<S>, std::less<>>;

/// Returns the matrix called name, checking that it has the expected shape (rows < 0: any).
template <class S>
const Mat<S>& require_matrix(const NamedMatrices<S>& matrices, const std::string& name, Index rows, Index cols) {
    auto found = matrices.find(name);
    if (found == matrices.end()) throw InputError("state is missing the tensor '" + name + "'");
    const Mat<S>& m = found->second;
    if ((rows >= 0 && m.rows() != rows) || m.cols() != cols) {
        throw InputError("state tensor '" + name + "' has per-head shape [" + std::to_string(m.rows()) + ", " +
                         std::to_string(m.cols()) + "], expected [" + (rows >= 0 ? std::to_string(rows) : "N") +
                         ", " + std::to_string(cols) + "]");
    }
    return m;
}

}  // namespace miras
