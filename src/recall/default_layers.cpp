// Presets wrapped as AnyLayer with their probe gate values. Parametric memories read with query
// scale 1, so that a read of a stored unit key k returns W k. Softmax attention reads with query
// scale sqrt(K): with unit keys its logits sqrt(K) cos(q, k) have the spread of q . k / sqrt(K)
// for q and k with unit-variance entries, as in a transformer.
#include "default_layers.hpp"

#include <cmath>

#include "miras/layer/presets.hpp"

namespace miras::recall {

namespace {

template <class L>
tasks::ProbedLayer probed(std::string name, L layer, tasks::ProbeGates gates) {
    return {std::move(name), std::make_shared<ErasedLayer<L>>(std::move(layer)), std::move(gates)};
}

}  // namespace

std::vector<tasks::ProbedLayer> default_probe_layers(Index key_dim) {
    if (key_dim < 1) throw InputError("key dimension " + std::to_string(key_dim) + " is invalid; valid is 1 or more");
    LayerOptions options;
    options.heads = 1;
    options.key_dim = key_dim;
    options.value_dim = key_dim;
    options.query_scale = 1.0;

    // Softmax reads before the token's own write, so that a read token's zero pair takes no part
    // in its own softmax and pushes no pair out of the window.
    LayerOptions attention = options;
    attention.query_scale = std::sqrt(static_cast<double>(key_dim));
    attention.read = ReadTiming::before_write;

    const double mild_decay = std::log(0.99);
    std::vector<tasks::ProbedLayer> layers;
    layers.push_back(probed("linear_attention", presets::linear_attention(options), {}));
    layers.push_back(probed("retnet", presets::retnet(options), {}));
    layers.push_back(probed("mamba2", presets::mamba2(options), {{"g", mild_decay}}));
    layers.push_back(probed("deltanet", presets::deltanet(options), {{"eta", 1.0}}));
    layers.push_back(probed("gated_deltanet", presets::gated_deltanet(options), {{"g", mild_decay}, {"eta", 1.0}}));
    layers.push_back(probed("longhorn", presets::longhorn(options), {{"eta", 1.0}}));
    layers.push_back(probed("mesanet", presets::mesanet(options), {{"g", 0.0}, {"beta", 1.0}}));
    layers.push_back(probed("softmax_attention", presets::softmax_attention(attention), {}));
    layers.push_back(probed("sliding_window_attention", presets::sliding_window_attention(attention, key_dim), {}));
    return layers;
}

}  // namespace miras::recall
