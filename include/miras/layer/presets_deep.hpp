// Deep-memory models as points of the algebra: the memory is an MLP and the algorithm mini-batch
// or momentum gradient descent. Per-token gates: eta (inner rate), g (log-decay), theta (momentum
// decay, log), delta (Huber threshold). Sources: the official TTT code (ttt-lm-pytorch), the
// flash-linear-attention TTT reference, Titans (2501.00663), Miras (2504.13173), Atlas (2505.23735).
// Choices the papers leave open are listed in docs/algebra.md and are options of each preset.
#pragma once

#include <cmath>
#include <vector>

#include "miras/algorithm/minibatch_gd.hpp"
#include "miras/bias/l2.hpp"
#include "miras/layer/layer.hpp"
#include "miras/memory/mlp.hpp"
#include "miras/retention/none.hpp"

namespace miras::presets {

using Ttt = Layer<MlpMemory, L2Bias, NoRetention, MiniBatchGD>;

/// The TTT inner model: x + LN(f_res(x)) with a per-head affine LayerNorm (eps 1e-6) and biases;
/// f_res is x W1 + b1 (depth 1) or GELU_tanh(x W1 + b1) W2 + b2 (depth 2, hidden 4f).
inline MlpMemory ttt_memory(Index depth, std::vector<double> ln_weight, std::vector<double> ln_bias, MlpInit init = {}) {
    MlpMemory m;
    m.depth = depth;
    m.expansion = 4.0;
    m.activation = depth == 1 ? Activation::identity : Activation::gelu_tanh;
    m.residual = true;
    m.biases = true;
    m.norm = MlpNorm::affine;
    m.norm_weight = std::move(ln_weight);
    m.norm_bias = std::move(ln_bias);
    m.init = init;
    return m;
}

/// The official TTT position factor max(0, 1/i + offset_i), i = 1..b (offsets learnable, 0 at init).
inline std::vector<double> ttt_token_factor(Index minibatch_size, const std::vector<double>& offsets = {}) {
    std::vector<double> f;
    for (Index i = 1; i <= minibatch_size; ++i) {
        const double offset = offsets.empty() ? 0.0 : offsets.at(static_cast<std::size_t>(i - 1));
        f.push_back(std::max(0.0, 1.0 / static_cast<double>(i) + offset));
    }
    return f;
}

/// Official TTT: eta[i, j] = token_factor[i] * eta_j inside a mini-batch, output q + LN(f(q)),
/// no query scaling. The per-token rate eta is ttt_base_lr * sigmoid(.) / f in the reference.
inline Ttt ttt(LayerOptions options, Index depth, Index minibatch_size, std::vector<double> token_factor,
               std::vector<double> ln_weight = {1.0}, std::vector<double> ln_bias = {0.0}, MlpInit init = {}) {
    if (!options.query_scale) options.query_scale = 1.0;
    MiniBatchGD algorithm{minibatch_size, GateConfig::input(Axis::head), MiniBatchRate::factored, std::move(token_factor)};
    return Ttt(options, ttt_memory(depth, std::move(ln_weight), std::move(ln_bias), init), {}, {}, algorithm);
}

/// TTT-Linear (official form), mini-batch 16 and the 1/i factor by default.
inline Ttt ttt_linear(LayerOptions options, Index minibatch_size = 16, std::vector<double> ln_weight = {1.0},
                      std::vector<double> ln_bias = {0.0}, MlpInit init = {}) {
    return ttt(options, 1, minibatch_size, ttt_token_factor(minibatch_size), std::move(ln_weight), std::move(ln_bias), init);
}

/// TTT-MLP (official form): two layers, hidden 4f, GELU_tanh.
inline Ttt ttt_mlp(LayerOptions options, Index minibatch_size = 16, std::vector<double> ln_weight = {1.0},
                   std::vector<double> ln_bias = {0.0}, MlpInit init = {}) {
    return ttt(options, 2, minibatch_size, ttt_token_factor(minibatch_size), std::move(ln_weight), std::move(ln_bias), init);
}

/// TTT-Linear as flash-linear-attention writes it: W_i = W0 - eta_i sum_{j<=i} G_j with the eta
/// of the query token, query scaled by K^-0.5, output z + LN(z); weights start at zero.
inline Ttt ttt_linear_fla(LayerOptions options, Index minibatch_size, std::vector<double> ln_weight = {1.0},
                          std::vector<double> ln_bias = {0.0}) {
    MlpMemory memory = ttt_memory(1, std::move(ln_weight), std::move(ln_bias), MlpInit{true});
    memory.read_adds_branch = true;
    MiniBatchGD algorithm{minibatch_size, GateConfig::input(Axis::head), MiniBatchRate::query_token};
    return Ttt(options, memory, {}, {}, algorithm);
}

}  // namespace miras::presets
