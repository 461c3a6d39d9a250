// A copy of a layer with other options, for tests that compare execution forms and thread counts.
#pragma once

#include "miras/layer/options.hpp"

namespace miras::test {

/// Returns `layer` rebuilt with the same components and its options as `change` leaves them.
template <class L, class Change>
L with_options(const L& layer, Change change) {
    LayerOptions options = layer.options();
    change(options);
    return L(options, layer.memory(), layer.bias(), layer.retention(), layer.algorithm());
}

/// Returns `layer` rebuilt with the same components and `execution`.
template <class L>
L with_execution(const L& layer, Execution execution) {
    return with_options(layer, [&](LayerOptions& options) { options.execution = execution; });
}

}  // namespace miras::test
