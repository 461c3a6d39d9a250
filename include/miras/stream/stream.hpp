// Streaming use of a layer: feed tokens one at a time or in blocks with the state carried, reset it,
// take snapshots at a token position and restore them. Feeding a sequence in blocks of any size
// gives the outputs of one call over the whole sequence.
#pragma once

#include <string>
#include <vector>

#include "miras/layer/layer.hpp"

namespace miras {

/// Copies tokens [first, first + count) of every tensor of `inputs` into `storage` and returns views
/// of them. Gate tensors with n time entries per token (the pairs of a multi-step writer) are sliced
/// at first * n.
template <class S>
Inputs<S> slice_tokens(const Inputs<S>& inputs, Index first, Index count, std::vector<Tensor<S>>& storage) {
    const Index T = inputs.q.dim(1);
    if (first < 0 || count < 0 || first + count > T) {
        throw InputError("token range [" + std::to_string(first) + ", " + std::to_string(first + count) +
                         ") is outside the " + std::to_string(T) + " tokens of the inputs");
    }
    storage.clear();
    storage.reserve(3 + inputs.gates.size());
    const auto slice = [&](const TensorView<S>& tensor) {
        const Index B = tensor.dim(0);
        const Index entries = tensor.dim(1);
        const Index per_token = T > 0 ? entries / T : 1;
        const Index row = entries > 0 ? tensor.size() / (B * entries) : 0;
        Shape shape = tensor.shape();
        shape[1] = count * per_token;
        Tensor<S>& out = storage.emplace_back(shape);
        for (Index b = 0; b < B; ++b) {
            const S* src = tensor.data() + (b * entries + first * per_token) * row;
            S* dst = out.data() + b * count * per_token * row;
            std::copy(src, src + count * per_token * row, dst);
        }
        return out.view();
    };
    Inputs<S> block;
    block.q = slice(inputs.q);
    block.k = slice(inputs.k);
    block.v = slice(inputs.v);
    for (const auto& [name, tensor] : inputs.gates) block.gates[name] = slice(tensor);
    return block;
}

/// A layer's state for B sequences together with the number of tokens fed so far.
template <class L, class S>
class Stream {
public:
    using State = typename L::template State<S>;

    /// A copy of the state at a token position.
    struct Snapshot {
        State state;
        Index position = 0;
    };

    Stream(const L& layer, Index batch) : layer_(&layer), state_(layer.template initial_state<S>(batch)) {}

    /// Runs the next tokens; returns their outputs [B, T_block, H, V].
    Tensor<S> feed(const Inputs<S>& block) {
        Tensor<S> output = layer_->forward(block, state_);
        position_ += block.q.dim(1);
        return output;
    }

    /// Tokens fed since the start or the last reset.
    Index position() const { return position_; }
    Index batch() const { return state_.batch; }

    /// Zeroes the state and the position.
    void reset() {
        state_ = layer_->template initial_state<S>(state_.batch);
        position_ = 0;
    }

    Snapshot snapshot() const { return {state_, position_}; }

    void restore(const Snapshot& snapshot) {
        if (snapshot.state.batch != state_.batch) {
            throw InputError("snapshot contains " + std::to_string(snapshot.state.batch) + " sequences but the stream has " +
                             std::to_string(state_.batch) + "; restore a snapshot taken from a stream of the same batch");
        }
        state_ = snapshot.state;
        position_ = snapshot.position;
    }

    const State& state() const { return state_; }
    State& state() { return state_; }

    /// Replaces the state (checked against the layer) and sets the position.
    void set_state(const std::map<std::string, Tensor<S>>& tensors, Index position) {
        state_ = layer_->load_state(tensors);
        position_ = position;
    }

private:
    const L* layer_;
    State state_;
    Index position_ = 0;
};

/// Runs N packed sequences: inputs have B = 1 and the tokens of all sequences concatenated along T;
/// sequence i spans tokens [offsets[i], offsets[i + 1]). `states` holds the N initial states (batch
/// N) and receives the final ones. A zero-length sequence yields no outputs and keeps its state.
/// Returns o [1, T, H, V], equal to running each sequence on its own.
template <class L, class S>
Tensor<S> forward_packed(const L& layer, const Inputs<S>& packed, const std::vector<Index>& offsets,
                         typename L::template State<S>& states) {
    if (packed.q.rank() != 4 || packed.q.dim(0) != 1) {
        throw InputError("packed input 'q' has shape " + shape_string(packed.q.shape()) +
                         ", expected [1, T, H, K] with the sequences concatenated along T");
    }
    const Index T = packed.q.dim(1), H = layer.dims().heads, V = layer.dims().value;
    const Index N = static_cast<Index>(offsets.size()) - 1;
    if (N < 0 || offsets.front() != 0 || offsets.back() != T) {
        throw InputError("offsets must start at 0 and end at T = " + std::to_string(T) + " (N + 1 values for N sequences)");
    }
    for (Index i = 0; i < N; ++i) {
        if (offsets[static_cast<std::size_t>(i + 1)] < offsets[static_cast<std::size_t>(i)]) {
            throw InputError("offsets[" + std::to_string(i + 1) + "] = " + std::to_string(offsets[static_cast<std::size_t>(i + 1)]) +
                             " is less than offsets[" + std::to_string(i) + "] = " +
                             std::to_string(offsets[static_cast<std::size_t>(i)]) + "; offsets must not decrease");
        }
    }
    if (states.batch != N) {
        throw InputError("states hold " + std::to_string(states.batch) + " sequences, the offsets describe " + std::to_string(N));
    }

    Tensor<S> output({1, T, H, V});
    std::vector<Tensor<S>> storage;
    for (Index i = 0; i < N; ++i) {
        const Index first = offsets[static_cast<std::size_t>(i)];
        const Index count = offsets[static_cast<std::size_t>(i + 1)] - first;
        if (count == 0) continue;
        const Inputs<S> segment = slice_tokens(packed, first, count, storage);

        typename L::template State<S> state;
        state.batch = 1;
        auto begin = states.heads.begin() + i * H;
        state.heads.assign(std::make_move_iterator(begin), std::make_move_iterator(begin + H));
        const Tensor<S> o = layer.forward(segment, state);
        std::move(state.heads.begin(), state.heads.end(), begin);
        std::copy(o.data(), o.data() + o.size(), output.data() + first * H * V);
    }
    return output;
}

}  // namespace miras
