// The layers `miras recall --presets` probes instead of the spec files: the published presets with
// their probe gate values.
#pragma once

#include <vector>

#include "miras/tasks/probes.hpp"

namespace miras::recall {

/// One head, key and value dimension key_dim, and constant gates: eta = beta = 1, a mild decay
/// g = log(0.99) for the gated models (0 for MesaNet) and the preset's ridge lambda.
std::vector<tasks::ProbedLayer> default_probe_layers(Index key_dim);

}  // namespace miras::recall
