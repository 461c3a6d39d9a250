// Reverse pass of any layer through its inner updates, by reverse-mode differentiation on a tape.
// Given dL/do and optionally dL/d(final state), it returns the gradients of the loss with respect
// to q, k, v, every per-token gate and every tensor of the initial state. It covers every
// combination the Layer template accepts. The second-order terms of deep memories (the derivative
// of an inner gradient step) are recorded like any other operation.
//
// Memory: a forward pass in double keeps the state every C = checkpoint_every tokens as named
// tensors. Then each segment, last first, is run again from its checkpoint on Var<double>, one
// sequence at a time on a tape that is cleared between segments. Its outputs are seeded with
// dL/do and its end state with the gradient that the later segment returned for its start state.
// One reverse sweep then gives the gradients of the segment's inputs and start state. The pass
// keeps O(T D) inputs and gradients, O(T / C) checkpoints and one segment's tape.
//
// Segments may start anywhere, also inside a mini-batch or an Omega window. The saved state
// contains the partial mini-batch (start weights, accumulated gradient, position), the momentum
// and the window, so a stream split at any token gives the same numbers as the whole stream.
//
// Cost: a tape node takes 32 bytes with its adjoint. A Gated DeltaNet head with K = V = 32 records
// about 7,300 nodes per token, and the pass then takes about 12 times as long as layer_backward
// (measured in double with g++ -O3 -march=native on one core of an AMD EPYC, B = 2, T = 256, H = 2,
// C = 16). Segments of 16 to 64 tokens were fastest there; a segment's tape beyond the cache slows
// the pass down.
#pragma once

#include <map>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "miras/core/parallel.hpp"
#include "miras/core/tape.hpp"
#include "miras/layer/backward.hpp"
#include "miras/layer/layer.hpp"

namespace miras {

namespace detail {

using StateTensors = std::map<std::string, Tensor<double>>;

/// Rows [first, last) along axis 1 of sequence b of a tensor [B, R, ...].
struct RowRange {
    Index b = 0, first = 0, last = 0;
};

inline Index row_width(const Shape& shape) {
    Index width = 1;
    for (std::size_t axis = 2; axis < shape.size(); ++axis) width *= shape[axis];
    return width;
}

/// Makes new tape variables [1, last - first, ...] with the values of the rows of `source`.
inline Tensor<Var<double>> variables_of_rows(const Tensor<double>& source, const RowRange& rows) {
    Shape shape = source.shape();
    const Index R = shape[1], width = row_width(shape);
    shape[0] = 1;
    shape[1] = rows.last - rows.first;
    Tensor<Var<double>> out(shape);
    const double* from = source.data() + (rows.b * R + rows.first) * width;
    for (Index i = 0; i < out.size(); ++i) out[i] = Var<double>::variable(from[i]);
    return out;
}

/// Adds the adjoints of `leaves` (made by variables_of_rows) into the same rows of `gradient`.
inline void add_row_adjoints(const Tape<double>& tape, const Tensor<Var<double>>& leaves, const RowRange& rows,
                             Tensor<double>& gradient) {
    const Index R = gradient.dim(1), width = row_width(gradient.shape());
    double* to = gradient.data() + (rows.b * R + rows.first) * width;
    for (Index i = 0; i < leaves.size(); ++i) to[i] += tape.adjoint(leaves[i].index);
}

/// Makes new tape variables [1, H, rows, cols] with the values of sequence b of every state tensor.
inline std::map<std::string, Tensor<Var<double>>> state_variables(const StateTensors& state, Index b) {
    std::map<std::string, Tensor<Var<double>>> out;
    for (const auto& [name, tensor] : state) {
        Shape shape = tensor.shape();
        shape[0] = 1;
        Tensor<Var<double>> one(shape);
        const double* from = tensor.data() + b * one.size();
        for (Index i = 0; i < one.size(); ++i) one[i] = Var<double>::variable(from[i]);
        out.emplace(name, std::move(one));
    }
    return out;
}

/// Adds `seed` [B, ...] at sequence b to the adjoints of `values` [1, ...]; constants take none.
inline void seed_adjoints(Tape<double>& tape, const Tensor<Var<double>>& values, const Tensor<double>& seed, Index b) {
    const double* from = seed.data() + b * values.size();
    for (Index i = 0; i < values.size(); ++i) {
        if (!values[i].constant()) tape.adjoint(values[i].index) += from[i];
    }
}

template <class L>
L reference_copy(const L& layer, int threads) {
    LayerOptions options = layer.options();
    options.execution = Execution::reference;
    options.threads = threads;
    return L(options, layer.memory(), layer.bias(), layer.retention(), layer.algorithm());
}

}  // namespace detail

/// Runs the layer over `inputs` from `initial` (the layer's initial state when null) and
/// back-propagates `d_output` [B, T, H, V] through every token, keeping the state every
/// `checkpoint_every` tokens. `d_final_state`, when given, contains named tensors in the layout of
/// Layer::save_state, and a missing name counts as zero. Returns the output and the gradients with
/// respect to q, k, v, each per-token gate, and the initial state (in initial_state_tensors).
/// The state entry 'position' of a mini-batch algorithm is an integer and gets a zero gradient.
/// Sequences run in parallel on the layer's thread count, each on its own tape.
/// Raises InputError for an input or gradient of the wrong shape (and whatever Layer::forward
/// raises), and ConfigError for checkpoint_every < 1 or a segment too long for one tape.
template <class L, class S>
LayerGradients<S> generic_layer_backward(const L& layer, const Inputs<S>& inputs,
                                         const typename L::template State<S>* initial,
                                         const std::type_identity_t<TensorView<S>>& d_output,
                                         const std::type_identity_t<std::map<std::string, Tensor<S>>>* d_final_state = nullptr,
                                         Index checkpoint_every = 16) {
    static_assert(std::is_same_v<S, float> || std::is_same_v<S, double>,
                  "generic_layer_backward takes float or double inputs; it differentiates in double itself");
    using detail::StateTensors;
    using V = Var<double>;
    if (checkpoint_every < 1) {
        throw ConfigError("checkpoint_every = " + std::to_string(checkpoint_every) + " is invalid; valid is 1 or more");
    }
    if (inputs.q.rank() != 4) {
        throw InputError("input 'q' has shape " + shape_string(inputs.q.shape()) + ", expected [B, T, H, K]");
    }
    const LayerDims& dims = layer.dims();
    const Index B = inputs.q.dim(0), T = inputs.q.dim(1), H = dims.heads, n = dims.steps_per_token;
    if (d_output.shape() != Shape{B, T, H, dims.value}) {
        throw InputError("d_output has shape " + shape_string(d_output.shape()) + ", expected [B, T, H, V] = " +
                         shape_string({B, T, H, dims.value}));
    }

    // The copies run the per-token loop, so that the double pass and the tape take the same steps.
    const L forward_layer = detail::reference_copy(layer, layer.options().threads);
    const L tape_layer = detail::reference_copy(layer, 1);

    // Inputs in double: q, k, v and the per-token gates the layer declares, with rows per token.
    StateTensors in;
    std::map<std::string, Index> rows_per_token;
    const auto take = [&](const std::string& name, const TensorView<S>& view, Index per_token) {
        in.emplace(name, tensor_cast<double>(view));
        rows_per_token[name] = per_token;
    };
    take("q", inputs.q, 1);
    take("k", inputs.k, n);
    take("v", inputs.v, n);
    std::vector<std::string> gate_names;
    for (const GateSpec& spec : layer.gates()) {
        if (!spec.config.per_token) continue;
        const auto found = inputs.gates.find(spec.name);
        if (found == inputs.gates.end()) continue;  // the first forward below raises the missing-gate error
        take(spec.name, found->second, spec.per_step ? n : 1);
        gate_names.push_back(spec.name);
    }

    const auto start_state = initial != nullptr ? *initial : layer.template initial_state<S>(B);
    StateTensors start;
    for (auto& [name, tensor] : layer.save_state(start_state)) start.emplace(name, tensor_cast<double>(tensor.view()));

    // The layer's own forward checks q, k, v, every gate and the state, before the slicing below
    // relies on their shapes, and gives the output.
    LayerGradients<S> grads;
    {
        Inputs<double> whole{in.at("q").view(), in.at("k").view(), in.at("v").view(), {}};
        for (const std::string& name : gate_names) whole.gates.emplace(name, in.at(name).view());
        auto state = layer.load_state(start);
        grads.output = tensor_cast<S>(layer.forward(whole, state).view());
    }

    // Forward in double over the whole batch, one segment at a time, saving each segment's start.
    const Index segments = T == 0 ? 0 : (T + checkpoint_every - 1) / checkpoint_every;
    std::vector<StateTensors> checkpoints;
    auto state = forward_layer.load_state(start);
    for (Index s = 0; s < segments; ++s) {
        const Index first = s * checkpoint_every, last = std::min(T, first + checkpoint_every);
        checkpoints.push_back(forward_layer.save_state(state));
        StateTensors part;
        for (const auto& [name, tensor] : in) {
            const Index per = rows_per_token.at(name);
            Shape shape = tensor.shape();
            shape[1] = (last - first) * per;
            Tensor<double> rows(shape);
            const Index width = detail::row_width(shape), R = tensor.dim(1);
            for (Index b = 0; b < B; ++b) {
                const double* from = tensor.data() + (b * R + first * per) * width;
                std::copy(from, from + shape[1] * width, rows.data() + b * shape[1] * width);
            }
            part.emplace(name, std::move(rows));
        }
        Inputs<double> segment_inputs{part.at("q").view(), part.at("k").view(), part.at("v").view(), {}};
        for (const std::string& name : gate_names) segment_inputs.gates.emplace(name, part.at(name).view());
        (void)forward_layer.forward(segment_inputs, state);
    }
    const StateTensors final_state = [&] {
        StateTensors out;
        for (auto& [name, tensor] : forward_layer.save_state(state)) out.emplace(name, std::move(tensor));
        return out;
    }();

    // dL/d(final state) in double, checked against the final state's layout.
    StateTensors d_final;
    if (d_final_state != nullptr) {
        for (const auto& [name, tensor] : *d_final_state) {
            const auto found = final_state.find(name);
            if (found == final_state.end()) {
                std::string valid;
                for (const auto& entry : final_state) valid += (valid.empty() ? "" : ", ") + entry.first;
                throw InputError("d_final_state has a tensor '" + name + "' that the state of this layer does not have; "
                                 "valid names are " + valid);
            }
            if (tensor.shape() != found->second.shape()) {
                throw InputError("d_final_state tensor '" + name + "' has shape " + shape_string(tensor.shape()) +
                                 ", expected the shape of the final state " + shape_string(found->second.shape()));
            }
            d_final.emplace(name, tensor_cast<double>(tensor.view()));
        }
    }
    const Tensor<double> d_out = tensor_cast<double>(d_output);

    // Gradients in double, filled by the sequences in parallel (each writes only its own rows).
    StateTensors d_in;
    for (const auto& [name, tensor] : in) d_in.emplace(name, Tensor<double>(tensor.shape()));
    StateTensors d_start;
    for (const auto& [name, tensor] : start) d_start.emplace(name, Tensor<double>(tensor.shape()));

    parallel_for(B, layer.options().threads, [&](Index b) {
        Tape<double> tape;
        TapeScope<double> scope(tape);

        // dL/d(state at the end of the current segment) for sequence b, as [1, H, rows, cols].
        StateTensors d_end;
        for (const auto& [name, tensor] : d_final) {
            Shape shape = tensor.shape();
            shape[0] = 1;
            Tensor<double> one(shape);
            std::copy(tensor.data() + b * one.size(), tensor.data() + (b + 1) * one.size(), one.data());
            d_end.emplace(name, std::move(one));
        }

        for (Index s = segments - 1; s >= 0; --s) {
            const Index first = s * checkpoint_every, last = std::min(T, first + checkpoint_every);
            tape.clear();

            // Leaves: the segment's start state and inputs.
            std::map<std::string, Tensor<V>> start_leaves;
            std::map<std::string, Tensor<V>> input_leaves;
            try {
                start_leaves = detail::state_variables(checkpoints[static_cast<std::size_t>(s)], b);
                for (const auto& [name, tensor] : in) {
                    const Index per = rows_per_token.at(name);
                    input_leaves.emplace(name, detail::variables_of_rows(tensor, {b, first * per, last * per}));
                }
            } catch (const std::length_error& error) {
                throw ConfigError(std::string(error.what()) + " (checkpoint_every = " + std::to_string(checkpoint_every) + ")");
            }
            Inputs<V> segment_inputs{input_leaves.at("q").view(), input_leaves.at("k").view(), input_leaves.at("v").view(), {}};
            for (const std::string& name : gate_names) segment_inputs.gates.emplace(name, input_leaves.at(name).view());

            // The segment on the tape.
            Tensor<V> o;
            std::map<std::string, Tensor<V>> end;
            try {
                auto segment_state = tape_layer.load_state(start_leaves);
                o = tape_layer.forward(segment_inputs, segment_state);
                end = tape_layer.save_state(segment_state);
            } catch (const std::length_error& error) {
                throw ConfigError(std::string(error.what()) + " (checkpoint_every = " + std::to_string(checkpoint_every) +
                                  "); choose a smaller checkpoint_every");
            }

            // Seeds: dL/do of the segment's tokens and dL/d(end state); then one reverse sweep.
            tape.zero_adjoints();
            {
                const Index width = H * dims.value;
                const double* from = d_out.data() + (b * T + first) * width;
                for (Index i = 0; i < o.size(); ++i) {
                    if (!o[i].constant()) tape.adjoint(o[i].index) += from[i];
                }
            }
            for (const auto& [name, seed] : d_end) {
                const auto found = end.find(name);
                if (found == end.end() || found->second.shape() != seed.shape()) {
                    throw std::logic_error("state tensor '" + name + "' changed its layout between segments");
                }
                detail::seed_adjoints(tape, found->second, seed, 0);
            }
            tape.backward();

            // Read the adjoints of the leaves.
            for (const auto& [name, leaves] : input_leaves) {
                const Index per = rows_per_token.at(name);
                detail::add_row_adjoints(tape, leaves, {b, first * per, last * per}, d_in.at(name));
            }
            d_end.clear();
            for (const auto& [name, leaves] : start_leaves) {
                Tensor<double> adjoint(leaves.shape());
                for (Index i = 0; i < leaves.size(); ++i) adjoint[i] = tape.adjoint(leaves[i].index);
                d_end.emplace(name, std::move(adjoint));
            }
        }

        // d_end is now dL/d(initial state) of sequence b, which goes into the batch tensors.
        for (auto& [name, gradient] : d_start) {
            const auto found = d_end.find(name);
            if (found == d_end.end()) continue;  // a name without a seed when T = 0
            std::copy(found->second.data(), found->second.data() + found->second.size(),
                      gradient.data() + b * found->second.size());
        }
    });

    // Results in S, each tensor in the shape of its input.
    grads.q = tensor_cast<S>(d_in.at("q").view());
    grads.k = tensor_cast<S>(d_in.at("k").view());
    grads.v = tensor_cast<S>(d_in.at("v").view());
    for (const std::string& name : gate_names) grads.gates.emplace(name, tensor_cast<S>(d_in.at(name).view()));
    for (const auto& [name, gradient] : d_start) grads.initial_state_tensors.emplace(name, tensor_cast<S>(gradient.view()));
    if (d_start.size() == 1 && d_start.begin()->first == "W") grads.initial_state = grads.initial_state_tensors.at("W");
    return grads;
}

}  // namespace miras
