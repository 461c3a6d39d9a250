// Deep-memory models as points of the algebra: the memory is an MLP and the algorithm mini-batch
// or momentum gradient descent. Per-token gates: eta (inner rate), g (log-decay), theta (momentum
// decay, log), delta (Huber threshold). Sources: the official TTT code (ttt-lm-pytorch), the
// flash-linear-attention TTT reference, Titans (2501.00663), Miras (2504.13173), Atlas (2505.23735).
// Choices the papers leave open are listed in docs/algebra.md and are options of each preset.
#pragma once

#include <cmath>
#include <vector>

#include "miras/algorithm/minibatch_gd.hpp"
#include "miras/algorithm/momentum.hpp"
#include "miras/bias/huber.hpp"
#include "miras/bias/l2.hpp"
#include "miras/bias/lp.hpp"
#include "miras/layer/layer.hpp"
#include "miras/memory/mlp.hpp"
#include "miras/retention/decay.hpp"
#include "miras/retention/mirror.hpp"
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

/// Returns the official TTT position factor max(0, 1/i + offset_i), i = 1..b (offsets learnable, 0 at init).
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

using Titans = Layer<MlpMemory, L2Bias, DecayRetention, Momentum>;
using Moneta = Layer<MlpMemory, LpBias, MirrorRetention, MiniBatchGD>;
using Yaad = Layer<MlpMemory, HuberBias, DecayRetention, MiniBatchGD>;
using Memora = Layer<MlpMemory, L2Bias, MirrorRetention, MiniBatchGD>;
using OmegaNet = Layer<MlpMemory, L2Bias, DecayRetention, Momentum>;
using Atlas = Layer<MlpMemory, L2Bias, DecayRetention, Momentum>;

/// Builds the Miras/Atlas deep memory: 2 layers, expansion 4, GELU, residual, M(x) = x + N(W2 s(W1 x)),
/// with a LayerNorm N without affine parameters when `normalized` (Moneta, Yaad, Memora).
inline MlpMemory miras_memory(bool normalized, MlpInit init = {}) {
    MlpMemory m;
    m.depth = 2;
    m.expansion = 4.0;
    m.activation = Activation::gelu;
    m.residual = true;
    m.norm = normalized ? MlpNorm::plain : MlpNorm::none;
    m.init = init;
    return m;
}

inline GateConfig per_token() { return GateConfig::input(Axis::head); }
inline DecayRetention forget_gate() { return DecayRetention{per_token(), Placement::gradient_then_decay}; }
inline MiniBatchGD online_gd(Index minibatch_size = 1) { return MiniBatchGD{minibatch_size, per_token()}; }

/// Titans (LMM): S_t = theta_t S_{t-1} - eta_t grad, W_t = exp(g_t) W_{t-1} + S_t, gradient at
/// W_{t-1} (or at the chunk start for minibatch_size > 1); the l2 loss here has the 1/2, so Titans'
/// step is eta / 2. The memory is x + W2 s(W1 x) of `depth` layers.
inline Titans titans(LayerOptions options, Index depth = 2, Index minibatch_size = 1, MlpInit init = {}) {
    MlpMemory memory = miras_memory(false, init);
    memory.depth = depth;
    Momentum algorithm{per_token(), per_token()};
    algorithm.minibatch_size = minibatch_size;
    return Titans(options, memory, {}, forget_gate(), algorithm);
}

/// (p, q)-Moneta, (3, 4) by default: l_p bias, A_t = alpha_t A_{t-1} - eta_t grad l_p,
/// W_t = A_t / ||A_t||_q^{q-2} per weight matrix, memory x + LN(W2 s(W1 x)).
inline Moneta moneta(LayerOptions options, double p = 3.0, double q = 4.0, MlpInit init = {}) {
    MirrorRetention retention{MirrorKind::lq, per_token()};
    retention.q = q;
    return Moneta(options, miras_memory(true, init), LpBias{p}, retention, online_gd());
}

/// Yaad: the Huber mixture (l2 below delta_t, delta_t l1 above) with a per-token delta and the
/// forget gate of Titans: W_t = alpha_t W_{t-1} - eta_t grad.
inline Yaad yaad(LayerOptions options, MlpInit init = {}) {
    return Yaad(options, miras_memory(true, init), HuberBias{HuberKind::mixture, per_token()}, forget_gate(), online_gd());
}

/// Memora: W_t = Softmax(alpha_t log W_{t-1} - eta_t grad l2), softmax over each row of each weight
/// matrix (and over each bias); the weights start at zero, so the first softmax makes them uniform.
inline Memora memora(LayerOptions options, SoftmaxDomain domain = SoftmaxDomain::row) {
    MirrorRetention retention{MirrorKind::kl, per_token()};
    retention.domain = domain;
    return Memora(options, miras_memory(true, MlpInit{true}), {}, retention, online_gd());
}

/// Builds the Atlas deep memory with identity features and a residual, or, for feature_degree > 1,
/// polynomial features (coefficients 1/i!) and no residual.
inline MlpMemory atlas_memory(Index feature_degree, MlpInit init) {
    MlpMemory memory = miras_memory(false, init);
    if (feature_degree > 1) {
        memory.features = FeatureMap::polynomial(static_cast<int>(feature_degree));
        memory.residual = false;
        memory.expansion = 1.0;
    }
    return memory;
}

/// OmegaNet: W_t = alpha_t W_{t-1} - eta_t sum_{i=t-c+1..t} gamma_i grad l2(W_{t-1}; k_i, v_i),
/// without momentum; gamma is 1 unless given per token.
inline OmegaNet omeganet(LayerOptions options, Index window = 4, Index feature_degree = 1, MlpInit init = {}) {
    Momentum algorithm{per_token()};
    algorithm.window = window;
    algorithm.use_momentum = false;
    return OmegaNet(options, atlas_memory(feature_degree, init), {}, forget_gate(), algorithm);
}

/// Atlas: S_t = theta_t S_{t-1} + G_t (Omega window c), W_t = alpha_t W_{t-1} - eta_t NS_k(S_t),
/// with k Newton-Schulz steps per weight matrix.
inline Atlas atlas(LayerOptions options, Index window = 4, int newton_schulz_steps = 5, Index feature_degree = 1,
                   MlpInit init = {}) {
    Momentum algorithm{per_token(), per_token()};
    algorithm.window = window;
    algorithm.newton_schulz_steps = newton_schulz_steps;
    return Atlas(options, atlas_memory(feature_degree, init), {}, forget_gate(), algorithm);
}

}  // namespace miras::presets
