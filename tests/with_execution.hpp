// A copy of a layer with another execution form, for tests that compare the forms.
#pragma once

#include "miras/layer/options.hpp"

namespace miras::test {

/// Returns `layer` rebuilt with the same components and `execution`.
template <class L>
L with_execution(const L& layer, Execution execution) {
    LayerOptions options = layer.options();
    options.execution = execution;
    return L(options, layer.memory(), layer.bias(), layer.retention(), layer.algorithm());
}

}  // namespace miras::test
