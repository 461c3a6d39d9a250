// AnyLayer: a Layer of any combination behind one run-time interface, for layers built from JSON
// specs, the command line tool and the benchmarks. Float and double are both available.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "miras/layer/backward.hpp"
#include "miras/layer/generic_backward.hpp"
#include "miras/layer/layer.hpp"

namespace miras {

template <class S>
using NamedTensors = std::map<std::string, Tensor<S>>;

/// The state of an AnyLayer for some batch, in one scalar type. Opaque; use AnyLayer to read it.
class AnyState {
public:
    virtual ~AnyState() = default;
    virtual bool is_double() const = 0;
    virtual Index batch() const = 0;
};

class AnyLayer {
public:
    virtual ~AnyLayer() = default;

    /// The component names, for example {"matrix", "l2", "decay", "gd"}.
    virtual std::string memory_name() const = 0;
    virtual std::string bias_name() const = 0;
    virtual std::string retention_name() const = 0;
    virtual std::string algorithm_name() const = 0;

    virtual const LayerOptions& options() const = 0;
    virtual const LayerDims& dims() const = 0;
    virtual double query_scale() const = 0;
    virtual std::vector<GateSpec> gates() const = 0;
    virtual Index state_size_per_head() const = 0;

    virtual std::unique_ptr<AnyState> initial_state(Index batch, bool use_double) const = 0;
    virtual Tensor<double> forward(const Inputs<double>& inputs, AnyState& state) const = 0;
    virtual Tensor<float> forward(const Inputs<float>& inputs, AnyState& state) const = 0;
    virtual NamedTensors<double> save_state(const AnyState& state) const = 0;
    virtual std::unique_ptr<AnyState> load_state(const NamedTensors<double>& tensors, bool use_double) const = 0;

    /// Names the reverse pass that backward runs: "hand-written" (layer_backward, for the linear
    /// families) or "tape" (generic_layer_backward, every other combination and option).
    virtual std::string backward_route() const = 0;

    /// Runs the layer over `inputs` from `initial` (the zero state when null) and back-propagates
    /// `d_output` [B, T, H, V], saving the state every `checkpoint_every` tokens. Returns the output
    /// and the gradients of q, k, v, every per-token gate and the initial state. Every valid
    /// combination has a reverse pass.
    virtual LayerGradients<double> backward(const Inputs<double>& inputs, const AnyState* initial,
                                            const TensorView<double>& d_output, Index checkpoint_every) const = 0;
    virtual LayerGradients<float> backward(const Inputs<float>& inputs, const AnyState* initial,
                                           const TensorView<float>& d_output, Index checkpoint_every) const = 0;
};

namespace detail {

// The dispatch from a layer to its reverse pass: the hand-written pass of the linear families
// where it covers the layer's options, else the tape pass, which covers every combination and
// costs about ten times more (docs/training.md).
template <class L>
bool has_hand_written_backward(const L& layer) {
    if constexpr (has_linear_backward_v<L>) {
        if (layer.memory().features.kind != FeatureKind::identity) return false;
        if (layer.dims().steps_per_token != 1 || layer.algorithm().separate_read_key) return false;
        if constexpr (std::is_same_v<typename L::bias_type, L2Bias>) {
            if (layer.bias().subtract_key) return false;
        }
        return true;
    } else {
        (void)layer;
        return false;
    }
}

template <class L, class S>
LayerGradients<S> run_backward(const L& layer, const Inputs<S>& inputs, const typename L::template State<S>* initial,
                               const TensorView<S>& d_output, Index checkpoint_every) {
    if constexpr (has_linear_backward_v<L>) {
        if (has_hand_written_backward(layer)) {
            return layer_backward(layer, inputs, initial, d_output, nullptr, checkpoint_every);
        }
    }
    return generic_layer_backward(layer, inputs, initial, d_output, nullptr, checkpoint_every);
}

}  // namespace detail

/// Wraps a concrete Layer as an AnyLayer.
template <class L>
class ErasedLayer final : public AnyLayer {
public:
    explicit ErasedLayer(L layer) : layer_(std::move(layer)) {}

    const L& layer() const { return layer_; }

    std::string memory_name() const override { return L::memory_type::name; }
    std::string bias_name() const override { return L::bias_type::name; }
    std::string retention_name() const override { return L::retention_type::name; }
    std::string algorithm_name() const override { return L::algorithm_type::name; }

    const LayerOptions& options() const override { return layer_.options(); }
    const LayerDims& dims() const override { return layer_.dims(); }
    double query_scale() const override { return layer_.query_scale(); }
    std::vector<GateSpec> gates() const override { return layer_.gates(); }
    Index state_size_per_head() const override { return layer_.state_size_per_head(); }

    std::unique_ptr<AnyState> initial_state(Index batch, bool use_double) const override {
        if (use_double) return std::make_unique<Held<double>>(layer_.template initial_state<double>(batch));
        return std::make_unique<Held<float>>(layer_.template initial_state<float>(batch));
    }

    Tensor<double> forward(const Inputs<double>& inputs, AnyState& state) const override {
        return layer_.forward(inputs, cast<double>(state).state);
    }

    Tensor<float> forward(const Inputs<float>& inputs, AnyState& state) const override {
        return layer_.forward(inputs, cast<float>(state).state);
    }

    NamedTensors<double> save_state(const AnyState& state) const override {
        if (state.is_double()) return layer_.save_state(cast<double>(state).state);
        NamedTensors<double> out;
        for (auto& [name, tensor] : layer_.save_state(cast<float>(state).state)) {
            out.emplace(name, tensor_cast<double>(tensor.view()));
        }
        return out;
    }

    std::unique_ptr<AnyState> load_state(const NamedTensors<double>& tensors, bool use_double) const override {
        if (use_double) return std::make_unique<Held<double>>(layer_.load_state(tensors));
        NamedTensors<float> converted;
        for (auto& [name, tensor] : tensors) converted.emplace(name, tensor_cast<float>(tensor.view()));
        return std::make_unique<Held<float>>(layer_.load_state(converted));
    }

    std::string backward_route() const override {
        return detail::has_hand_written_backward(layer_) ? "hand-written" : "tape";
    }

    LayerGradients<double> backward(const Inputs<double>& inputs, const AnyState* initial,
                                    const TensorView<double>& d_output, Index checkpoint_every) const override {
        return detail::run_backward(layer_, inputs, initial != nullptr ? &cast<double>(*initial).state : nullptr, d_output,
                                    checkpoint_every);
    }

    LayerGradients<float> backward(const Inputs<float>& inputs, const AnyState* initial,
                                   const TensorView<float>& d_output, Index checkpoint_every) const override {
        return detail::run_backward(layer_, inputs, initial != nullptr ? &cast<float>(*initial).state : nullptr, d_output,
                                    checkpoint_every);
    }

private:
    template <class S>
    struct Held final : AnyState {
        explicit Held(typename L::template State<S> s) : state(std::move(s)) {}
        bool is_double() const override { return std::is_same_v<S, double>; }
        Index batch() const override { return state.batch; }
        typename L::template State<S> state;
    };

    template <class S>
    static Held<S>& cast(AnyState& state) {
        if (state.is_double() != std::is_same_v<S, double>) {
            throw InputError(std::string("state holds ") + (state.is_double() ? "double" : "float") +
                             " values but the inputs are " + scalar_name<S>());
        }
        return static_cast<Held<S>&>(state);
    }
    template <class S>
    static const Held<S>& cast(const AnyState& state) {
        return cast<S>(const_cast<AnyState&>(state));
    }

    L layer_;
};

}  // namespace miras
