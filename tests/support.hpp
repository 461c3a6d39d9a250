// Shared helpers of the test suites: random inputs for any layer, the table of presets behind one
// interface that runs in float, double and Dual<double>, and tensor comparisons.
#pragma once

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "miras/layer/presets.hpp"
#include "miras/spec/any_layer.hpp"

namespace miras::test {

template <class S>
using TensorMap = std::map<std::string, Tensor<S>>;
using D1 = Dual<double>;

/// Uniform values in [lo, hi) from a seeded generator; the same seed gives the same values.
class Random {
public:
    explicit Random(std::uint64_t seed) : engine_(seed) {}
    double uniform(double lo, double hi) { return lo + (hi - lo) * unit_(engine_); }
    Tensor<double> tensor(Shape shape, double lo, double hi) {
        Tensor<double> out(std::move(shape));
        for (Index i = 0; i < out.size(); ++i) out[i] = uniform(lo, hi);
        return out;
    }

private:
    std::mt19937_64 engine_;
    std::uniform_real_distribution<double> unit_{0.0, 1.0};
};

/// Values drawn for a gate of the given range: log-gates in [-1, -0.05], rates in [0.1, 0.9],
/// positive terms in [0.5, 1.5] and free vectors in [-0.5, 0.5].
inline std::pair<double, double> gate_interval(Range range) {
    switch (range) {
        case Range::log_gate: return {-1.0, -0.05};
        case Range::nonnegative: return {0.1, 0.9};
        case Range::positive: return {0.5, 1.5};
        case Range::any: return {-0.5, 0.5};
    }
    return {0.0, 1.0};
}

/// Channel count of a channel gate, as the layer reads it.
inline Index gate_channels(const GateSpec& spec, const LayerDims& dims) {
    if (spec.config.axis == Axis::head) return 1;
    if (spec.channels > 0) return spec.channels;
    return spec.config.axis == Axis::key ? dims.key_features : dims.value;
}

/// q [B, T, H, K], k [B, T n, H, K], v [B, T n, H, V] in [-1, 1] and every per-token gate the layer
/// declares, drawn from its valid range.
inline TensorMap<double> random_inputs(const LayerDims& dims, const std::vector<GateSpec>& gates, Index B, Index T,
                                       std::uint64_t seed) {
    Random random(seed);
    const Index H = dims.heads, n = dims.steps_per_token;
    TensorMap<double> in;
    in["q"] = random.tensor({B, T, H, dims.key}, -1.0, 1.0);
    in["k"] = random.tensor({B, T * n, H, dims.key}, -1.0, 1.0);
    in["v"] = random.tensor({B, T * n, H, dims.value}, -1.0, 1.0);
    for (const GateSpec& spec : gates) {
        if (!spec.config.per_token) continue;
        Shape shape{B, T * (spec.per_step ? n : 1), H};
        if (spec.config.axis != Axis::head) shape.push_back(gate_channels(spec, dims));
        const auto [lo, hi] = gate_interval(spec.range);
        in[spec.name] = random.tensor(shape, lo, hi);
    }
    return in;
}

/// Converts every tensor of a map to another scalar type.
template <class To, class From>
TensorMap<To> cast_all(const TensorMap<From>& in) {
    TensorMap<To> out;
    for (const auto& [name, tensor] : in) {
        Tensor<To> converted(tensor.shape());
        for (Index i = 0; i < tensor.size(); ++i) converted[i] = To(tensor[i]);
        out.emplace(name, std::move(converted));
    }
    return out;
}

/// Views q, k and v and passes every other tensor as a gate.
template <class S>
Inputs<S> as_inputs(const TensorMap<S>& tensors) {
    Inputs<S> inputs;
    for (const auto& [name, tensor] : tensors) {
        if (name == "q") inputs.q = tensor.view();
        else if (name == "k") inputs.k = tensor.view();
        else if (name == "v") inputs.v = tensor.view();
        else inputs.gates.emplace(name, tensor.view());
    }
    return inputs;
}

/// Tokens [begin, end) of every per-token tensor (axis 1 has T or T * n entries).
template <class S>
TensorMap<S> token_slice(const TensorMap<S>& in, Index T, Index begin, Index end) {
    TensorMap<S> out;
    for (const auto& [name, tensor] : in) {
        const Index B = tensor.dim(0), rows = tensor.dim(1), per = rows / T;
        const Index inner = element_count(Shape(tensor.shape().begin() + 2, tensor.shape().end()));
        Shape shape = tensor.shape();
        shape[1] = (end - begin) * per;
        Tensor<S> part(shape);
        for (Index b = 0; b < B; ++b) {
            for (Index r = begin * per; r < end * per; ++r) {
                for (Index i = 0; i < inner; ++i) {
                    part[(b * shape[1] + r - begin * per) * inner + i] = tensor[(b * rows + r) * inner + i];
                }
            }
        }
        out.emplace(name, std::move(part));
    }
    return out;
}

/// Sequences [begin, end) of every tensor along axis 0.
template <class S>
TensorMap<S> batch_slice(const TensorMap<S>& in, Index begin, Index end) {
    TensorMap<S> out;
    for (const auto& [name, tensor] : in) {
        const Index per = tensor.size() / tensor.dim(0);
        Shape shape = tensor.shape();
        shape[0] = end - begin;
        Tensor<S> part(shape);
        for (Index i = 0; i < part.size(); ++i) part[i] = tensor[begin * per + i];
        out.emplace(name, std::move(part));
    }
    return out;
}

/// Largest |a - b| / max(1, |b|) over two tensors of the same shape (infinity if shapes differ).
template <class A, class B>
double max_rel_diff(const Tensor<A>& a, const Tensor<B>& b) {
    if (a.shape() != b.shape()) return std::numeric_limits<double>::infinity();
    double worst = 0.0;
    for (Index i = 0; i < a.size(); ++i) {
        const double x = value_of(a[i]), y = value_of(b[i]);
        worst = std::max(worst, std::abs(x - y) / std::max(1.0, std::abs(y)));
    }
    return worst;
}

/// A preset behind one interface: its AnyLayer (float and double) and a Dual<double> forward. The
/// dual forward is compiled only where MIRAS_TEST_DUAL is defined, which keeps the other suites light.
class Model {
public:
    virtual ~Model() = default;
    virtual const AnyLayer& any() const = 0;
    /// Runs from `state` (named tensors [B, H, rows, cols]) or from zero when it is null.
    virtual Tensor<double> run(const TensorMap<double>& in, const TensorMap<double>* state = nullptr) const = 0;
    virtual Tensor<float> run(const TensorMap<float>& in, const TensorMap<float>* state = nullptr) const = 0;
    virtual Tensor<D1> run(const TensorMap<D1>& in, const TensorMap<D1>* state = nullptr) const = 0;
};

template <class L>
class ModelOf final : public Model {
public:
    explicit ModelOf(L layer) : erased_(std::move(layer)) {}
    const AnyLayer& any() const override { return erased_; }
    Tensor<double> run(const TensorMap<double>& in, const TensorMap<double>* state) const override { return go(in, state); }
    Tensor<float> run(const TensorMap<float>& in, const TensorMap<float>* state) const override { return go(in, state); }
    Tensor<D1> run(const TensorMap<D1>& in, const TensorMap<D1>* state) const override {
#ifdef MIRAS_TEST_DUAL
        return go(in, state);
#else
        (void)in;
        (void)state;
        throw std::logic_error("define MIRAS_TEST_DUAL before including support.hpp to run presets in Dual<double>");
#endif
    }

private:
    template <class S>
    Tensor<S> go(const TensorMap<S>& in, const TensorMap<S>* state) const {
        const L& layer = erased_.layer();
        const Inputs<S> inputs = as_inputs(in);
        auto start = state != nullptr ? layer.load_state(*state) : layer.template initial_state<S>(inputs.q.dim(0));
        return layer.forward(inputs, start);
    }
    ErasedLayer<L> erased_;
};

template <class L>
std::unique_ptr<Model> model(L layer) {
    return std::make_unique<ModelOf<L>>(std::move(layer));
}

/// One preset of the table: how to build it for some sizes, and whether its keys are derived from
/// the log-gate (HGRN2: k = 1 - exp(g)).
struct Preset {
    std::string name;
    std::function<std::unique_ptr<Model>(LayerOptions)> make;
    Index steps = 1;
    bool keys_from_gate = false;
    bool needs_square = false;  // key dimension must equal value dimension (vector memory)
};

/// Replaces k by 1 - exp(g) for presets whose keys come from the gate.
template <class S>
void finish_inputs(const Preset& preset, TensorMap<S>& in) {
    if (preset.keys_from_gate) in["k"] = presets::hgrn2_keys(in.at("g").view());
}

inline std::vector<Preset> all_presets() {
    using namespace presets;
    std::vector<Preset> table;
    table.push_back({"linear_attention", [](LayerOptions o) { return model(linear_attention(o)); }});
    table.push_back({"retnet", [](LayerOptions o) { return model(retnet(o)); }});
    table.push_back({"lightning", [](LayerOptions o) { return model(lightning_attention(o, 1, 3)); }});
    table.push_back({"mamba2", [](LayerOptions o) { return model(mamba2(o)); }});
    table.push_back({"gla", [](LayerOptions o) { return model(gla(o)); }});
    table.push_back({"hgrn2", [](LayerOptions o) { return model(hgrn2(o)); }, 1, true});
    table.push_back({"elementwise_rnn", [](LayerOptions o) { return model(elementwise_linear_rnn(o)); }, 1, false, true});
    table.push_back({"deltanet", [](LayerOptions o) { return model(deltanet(o)); }});
    table.push_back({"gated_deltanet", [](LayerOptions o) { return model(gated_deltanet(o)); }});
    table.push_back({"kda", [](LayerOptions o) { return model(kda(o)); }});
    table.push_back({"comba", [](LayerOptions o) { return model(comba(o)); }});
    table.push_back({"deltaproduct", [](LayerOptions o) { return model(deltaproduct(o, 3)); }, 3});
    table.push_back({"rwkv7", [](LayerOptions o) { return model(rwkv7(o)); }});
    table.push_back({"longhorn_full", [](LayerOptions o) { return model(longhorn(o, false)); }});
    table.push_back({"longhorn_diagonal", [](LayerOptions o) { return model(longhorn(o, true)); }});
    table.push_back({"mesanet_exact", [](LayerOptions o) { return model(mesanet(o, {0.7})); }});
    table.push_back({"mesanet_cg", [](LayerOptions o) {
                         return model(mesanet(o, {1.0}, LinearSolver::conjugate_gradient, 4));
                     }});
    table.push_back({"softmax_attention", [](LayerOptions o) { return model(softmax_attention(o)); }});
    table.push_back({"sliding_window", [](LayerOptions o) { return model(sliding_window_attention(o, 3)); }});
    return table;
}

/// Prints a preset by its name in test messages.
inline void PrintTo(const Preset& preset, std::ostream* out) { *out << preset.name; }

inline std::string preset_name(const ::testing::TestParamInfo<Preset>& info) { return info.param.name; }

}  // namespace miras::test
