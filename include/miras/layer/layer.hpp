// Layer<Memory, Bias, Retention, Algorithm>: a sequence layer built from the four choices.
//
// Per head and written pair (k, v), with x = phi(k):
//   1. the algorithm predicts y = M(W; x) (after the retention for decay_then_gradient),
//   2. the attentional bias gives dl/dy,
//   3. the memory turns it into the parameter gradient J^T dl/dy,
//   4. the algorithm takes its step, and the retention decides how the previous W enters,
// and the output is o = M(W_t; s phi(q)) with the query scale s, read after the write of token t
// (or before it, as an option). Sequences are [B, T, H, D] row-major; states are per (b, h).
#pragma once

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "miras/algorithm/context.hpp"
#include "miras/core/parallel.hpp"
#include "miras/layer/chunked.hpp"
#include "miras/layer/chunked_dplr.hpp"
#include "miras/layer/chunked_mesa.hpp"
#include "miras/layer/fused.hpp"
#include "miras/layer/options.hpp"
#include "miras/layer/inputs.hpp"
#include "miras/layer/minibatch_mlp.hpp"
#include "miras/layer/traits.hpp"
#include "miras/memory/feature_map.hpp"
#include "miras/memory/state_io.hpp"

namespace miras {

namespace detail {
/// An algorithm whose state contains memory parameters (start weights, momentum) declares
/// StateFor<Memory, S>; the others declare State<S>.
template <class Algorithm, class Memory, class S>
struct algorithm_state { using type = typename Algorithm::template State<S>; };
template <class Algorithm, class Memory, class S>
    requires requires { typename Algorithm::template StateFor<Memory, S>; }
struct algorithm_state<Algorithm, Memory, S> { using type = typename Algorithm::template StateFor<Memory, S>; };

/// The gates a bias binds (the Huber threshold), or none.
template <class Bias, class S>
struct bias_gates { using type = NoBiasGates; };
template <class Bias, class S>
    requires requires { typename Bias::template Bound<S>; }
struct bias_gates<Bias, S> { using type = typename Bias::template Bound<S>; };
}  // namespace detail

/// \tparam Memory     what stores the map from keys to values (MatrixMemory, VectorMemory, KVCacheMemory, MlpMemory)
/// \tparam Bias       the inner loss the memory minimises (DotProductBias, L2Bias, LpBias, HuberBias, ValueShiftBias)
/// \tparam Retention  how the previous memory is kept (NoRetention, DecayRetention, MirrorRetention)
/// \tparam Algorithm  how the inner problem is optimised (GradientStep, ImplicitStep, LeastSquares,
///                    GeneralizedDelta, NonParametric, MiniBatchGD, Momentum)
template <class Memory, class Bias, class Retention, class Algorithm>
class Layer {
    using Rules = combination_rules<Memory, Bias, Retention, Algorithm>;
    static_assert(Rules::memory_matches_algorithm,
                  "the kv_cache memory is solved only by the nonparametric algorithm, and that algorithm needs the kv_cache memory");
    static_assert(Rules::algorithm_supports_memory,
                  "the implicit, least_squares and generalized_delta algorithms have closed forms only for the matrix memory");
    static_assert(Rules::algorithm_supports_bias,
                  "the least_squares, generalized_delta and nonparametric algorithms solve the l2 regression, so they need the l2 bias");
    static_assert(Rules::deep_memory_has_gradient_algorithm,
                  "the mlp memory is trained only by the minibatch_gd and momentum algorithms, which take its gradient at stored weights");
    static_assert(Rules::retention_finished_by_algorithm,
                  "the mirror retention maps the memory back after each step, which only the gd, minibatch_gd and momentum algorithms do");

public:
    using memory_type = Memory;
    using bias_type = Bias;
    using retention_type = Retention;
    using algorithm_type = Algorithm;

    template <class S>
    struct HeadState {
        typename Memory::template Params<S> memory;
        typename detail::algorithm_state<Algorithm, Memory, S>::type algorithm;
    };

    /// The state of B sequences: one HeadState per (b, h), b-major.
    template <class S>
    struct State {
        Index batch = 0;
        std::vector<HeadState<S>> heads;
    };

    explicit Layer(LayerOptions options, Memory memory = {}, Bias bias = {}, Retention retention = {},
                   Algorithm algorithm = {})
        : options_(options), memory_(std::move(memory)), bias_(std::move(bias)),
          retention_(std::move(retention)), algorithm_(std::move(algorithm)) {
        check_positive(options_.heads, "heads");
        check_positive(options_.key_dim, "key dimension");
        check_positive(options_.value_dim, "value dimension");
        check_positive(options_.steps_per_token, "steps per token");
        check_positive(options_.chunk_size, "chunk size");
        check_positive(options_.threads, "thread count");
        if (options_.query_scale && !std::isfinite(*options_.query_scale)) {
            throw ConfigError("query scale " + std::to_string(*options_.query_scale) + " is invalid; valid is a finite number");
        }
        dims_.heads = options_.heads;
        dims_.key = options_.key_dim;
        dims_.value = options_.value_dim;
        dims_.key_features = memory_.feature_dim(options_.key_dim);
        dims_.steps_per_token = options_.steps_per_token;
        if (options_.execution == Execution::chunked && !has_chunked_form()) {
            throw ConfigError("execution 'chunked' is invalid for this layer (" + chunked_form_settings() +
                              "). A chunked form needs the matrix memory, identity features and the read after the "
                              "write, with a gradient step, the generalised delta rule or least squares. A gradient "
                              "step needs the l2 bias without subtract_key or the dot-product bias, and a rate per "
                              "head. The generalised delta rule needs a rate per head and steps_per_token 1. Least "
                              "squares needs steps_per_token 1. The retention must be none or a decay per head or key "
                              "channel, and per head for least squares. Use execution 'automatic' or 'recurrent' for "
                              "this layer.");
        }
        memory_.validate(dims_);
        if constexpr (requires { algorithm_.validate(); }) algorithm_.validate();
        if constexpr (requires { bias_.validate(); }) bias_.validate();
        if constexpr (requires { retention_.validate(dims_); }) retention_.validate(dims_);
        if constexpr (std::is_same_v<Algorithm, LeastSquares>) {
            if constexpr (requires { retention_.gate; }) {
                if (retention_.gate.axis != Axis::head) throw ConfigError("least_squares needs a per-head decay");
            }
        }
        if constexpr (requires { algorithm_.check_retention(retention_); }) algorithm_.check_retention(retention_);
        if constexpr (!Memory::parametric) {
            if constexpr (requires { retention_.gate; }) {
                if (retention_.gate.axis != Axis::head) throw ConfigError("the kv_cache memory needs a per-head decay");
            }
        }
    }

    const LayerOptions& options() const { return options_; }
    const LayerDims& dims() const { return dims_; }
    const Memory& memory() const { return memory_; }
    const Bias& bias() const { return bias_; }
    const Retention& retention() const { return retention_; }
    const Algorithm& algorithm() const { return algorithm_; }

    double query_scale() const {
        return options_.query_scale ? *options_.query_scale : 1.0 / std::sqrt(static_cast<double>(options_.key_dim));
    }

    /// Returns whether a call of T tokens runs the chunked form.
    bool runs_chunked(Index T) const {
        switch (options_.execution) {
            case Execution::reference:
            case Execution::recurrent: return false;
            case Execution::chunked: return true;
            case Execution::automatic: return T >= options_.chunk_size && has_chunked_form();
        }
        return false;
    }

    /// Returns the settings that decide whether the layer has a chunked form, for error messages.
    std::string chunked_form_settings() const {
        std::string text = std::string(Memory::name) + "/" + Bias::name + "/" + Retention::name + "/" +
                           Algorithm::name + ", read " +
                           (options_.read == ReadTiming::after_write ? "after" : "before") +
                           " the write, steps_per_token " + std::to_string(dims_.steps_per_token);
        if constexpr (requires { memory_.features.kind; }) {
            text += std::string(", ") + feature_kind_name(memory_.features.kind) + " features";
        }
        if constexpr (requires { algorithm_.rate.axis; }) {
            text += std::string(", rate per ") + axis_name(algorithm_.rate.axis);
        }
        if constexpr (requires { retention_.gate.axis; }) {
            text += std::string(", decay per ") + axis_name(retention_.gate.axis);
        }
        return text;
    }

    /// Returns whether the layer has an exact chunked form with its options.
    bool has_chunked_form() const {
        return detail::chunkable(*this) || detail::dplr_chunkable(*this) || detail::mesa_chunkable(*this);
    }

    /// Lists every gate the layer reads: the retention's, the algorithm's, then the bias's.
    std::vector<GateSpec> gates() const {
        std::vector<GateSpec> all = retention_.gates();
        for (auto& spec : algorithm_.gates(dims_)) all.push_back(spec);
        if constexpr (requires { bias_.gates(); }) {
            for (auto& spec : bias_.gates()) all.push_back(spec);
        }
        return all;
    }

    /// Scalars of state per head (for the kv cache: per cached pair).
    Index state_size_per_head() const {
        if constexpr (requires { algorithm_.state_size(dims_, memory_); }) {
            return memory_.state_size(dims_) + algorithm_.state_size(dims_, memory_);
        } else {
            return memory_.state_size(dims_) + algorithm_.state_size(dims_);
        }
    }

    template <class S>
    State<S> initial_state(Index batch) const {
        State<S> state;
        state.batch = batch;
        for (Index b = 0; b < batch; ++b) {
            for (Index h = 0; h < dims_.heads; ++h) {
                auto memory = [&] {
                    if constexpr (requires { memory_.template init_params<S>(dims_, h); }) {
                        return memory_.template init_params<S>(dims_, h);
                    } else {
                        return memory_.template zero_params<S>(dims_);
                    }
                }();
                auto algorithm = [&] {
                    if constexpr (requires { algorithm_.template init_state<S>(dims_, memory_, memory); }) {
                        return algorithm_.template init_state<S>(dims_, memory_, memory);
                    } else {
                        return algorithm_.template init_state<S>(dims_);
                    }
                }();
                state.heads.push_back(HeadState<S>{std::move(memory), std::move(algorithm)});
            }
        }
        return state;
    }

private:
    /// The gates of one call, resolved against its inputs.
    template <class S>
    struct Bound {
        typename Retention::template Bound<S> retention;
        typename Algorithm::template Bound<S> algorithm;
        typename detail::bias_gates<Bias, S>::type bias;
    };

    /// The vectors the token loop of one head reuses from token to token.
    template <class S>
    struct Workspace {
        Scratch<S> scratch;
        Vec<S> x, query, y;
    };

public:
    /// Runs the layer over the inputs, starting from `state` and leaving the final state in it.
    /// Returns o [B, T, H, V]. Finite inputs can still drive the state to infinity (a delta rule
    /// with beta * ||k||^2 > 2, as the layer does not normalise keys; a large inner rate): such a
    /// call throws a NumericalError naming the first non-finite output, and leaves the state unusable.
    template <class S>
    Tensor<S> forward(const Inputs<S>& inputs, State<S>& state) const {
        const auto [B, T] = check_shapes(inputs);
        const bool check_while_reading = checks_values_while_reading(T);
        if (!check_while_reading) check_values(inputs);
        check_state(state, B);
        GateBinder<S> binder(inputs, dims_, B, T);
        const Bound<S> gates = bind(binder);
        try {
            binder.check_values(/*channel_gates=*/!check_while_reading);
        } catch (const InputError&) {
            // Name the value that the checks in their usual order find first.
            check_all_values(inputs, binder);
            throw;
        }
        Tensor<S> output({B, T, dims_.heads, dims_.value});
        const bool outputs_checked = run(inputs, gates, B, T, state, output.data(), static_cast<Workspace<S>*>(nullptr),
                                         check_while_reading ? &binder : static_cast<const GateBinder<S>*>(nullptr));
        if (!outputs_checked) detail::check_output_finite(output.data(), output.shape(), options_.threads);
        return output;
    }

    /// Runs the layer from the zero state.
    template <class S>
    Tensor<S> forward(const Inputs<S>& inputs) const {
        State<S> state = initial_state<S>(inputs.q.empty() ? 0 : inputs.q.dim(0));
        return forward(inputs, state);
    }

    template <class S>
    class Decoder;

    /// Returns a decoder over fixed input buffers of one token each ([B, 1, H, *]). Every step()
    /// reads the values the buffers contain at that moment, advances `state` by one token and
    /// writes o [B, 1, H, V] into output(). Shapes are checked and gates bound once, here. Each
    /// step checks the values (finite inputs, gates in range) as forward() does. The layer, the
    /// buffers the views point to and `state` must outlive the decoder and stay where they are. With one
    /// thread and a step that runs the fused loop, its layers (the gradient step of the matrix memory
    /// with a chunked form) allocate nothing per step.
    template <class S>
    Decoder<S> decoder(Inputs<S> inputs, State<S>& state) const {
        return Decoder<S>(*this, std::move(inputs), state);
    }

    template <class S>
    class Decoder {
    public:
        Decoder(const Layer& layer, Inputs<S> inputs, State<S>& state)
            : layer_(layer), inputs_(std::move(inputs)), state_(state), batch_(one_token_batch(layer, inputs_)),
              binder_(inputs_, layer.dims_, batch_, 1), gates_(layer.bind(binder_)),
              output_({batch_, 1, layer.dims_.heads, layer.dims_.value}),
              workspaces_(static_cast<std::size_t>(batch_ * layer.dims_.heads)) {
            layer.check_state(state, batch_);
        }
        Decoder(const Decoder&) = delete;
        Decoder& operator=(const Decoder&) = delete;

        /// Advances the state by the token in the input buffers and returns its output [B, 1, H, V].
        const Tensor<S>& step() {
            layer_.check_values(inputs_);
            binder_.check_values();
            if (!layer_.run(inputs_, gates_, batch_, 1, state_, output_.data(), workspaces_.data(),
                            static_cast<const GateBinder<S>*>(nullptr))) {
                detail::check_output_finite(output_.data(), output_.shape());
            }
            return output_;
        }

        /// The output of the last step.
        const Tensor<S>& output() const { return output_; }

    private:
        static Index one_token_batch(const Layer& layer, const Inputs<S>& inputs) {
            const auto [B, T] = layer.check_shapes(inputs);
            if (T != 1) {
                throw InputError("a decoder takes one token per step; input 'q' has T = " + std::to_string(T) +
                                 ", valid is T = 1");
            }
            return B;
        }

        const Layer& layer_;
        Inputs<S> inputs_;
        State<S>& state_;
        Index batch_;
        GateBinder<S> binder_;
        Bound<S> gates_;
        Tensor<S> output_;
        std::vector<Workspace<S>> workspaces_;
    };

private:
    template <class S>
    Bound<S> bind(GateBinder<S>& binder) const {
        Bound<S> gates{retention_.bind(binder), algorithm_.bind(binder, dims_), {}};
        if constexpr (requires { bias_.bind(binder); }) gates.bias = bias_.bind(binder);
        return gates;
    }

    template <class S>
    void check_state(const State<S>& state, Index B) const {
        if (state.batch != B || static_cast<Index>(state.heads.size()) != B * dims_.heads) {
            throw InputError("state contains " + std::to_string(state.batch) + " sequences but the inputs have B = " +
                             std::to_string(B) + "; valid is a state made by initial_state(" + std::to_string(B) +
                             ") or loaded from tensors [" + std::to_string(B) + ", H, rows, cols]");
        }
    }

    /// Returns whether forward() leaves the check of q, k, v and the gates with a value per channel
    /// to the chunked forms that run over groups of heads (the gradient step and the generalised
    /// delta rule of the matrix memory). These check each chunk as they read it, in place of a
    /// separate pass over the inputs. They do so when the inputs outnumber the state, which they
    /// save to restore on a value that fails its check.
    bool checks_values_while_reading(Index T) const {
        if (options_.execution == Execution::reference || !runs_chunked(T)) return false;
        bool grouped = false;
        if constexpr (detail::chunkable_types_v<Memory, Bias, Retention, Algorithm>) grouped = detail::chunkable(*this);
        if constexpr (detail::dplr_types_v<Memory, Retention, Algorithm>) grouped = true;
        const Index K = dims_.key, V = dims_.value, n = dims_.steps_per_token;
        return grouped && T * (K + n * (K + V)) > K * V;
    }

    /// Checks q, k and v, then every gate in the order it was bound: the checks before a run in
    /// their usual order, so that the error names the value they find first.
    template <class S>
    void check_all_values(const Inputs<S>& inputs, const GateBinder<S>& binder) const {
        check_values(inputs);
        binder.check_values();
    }

    /// Runs forward_heads(b, first_head, last_head) over the groups of heads of every sequence, one
    /// group per thread, and returns whether every output it wrote is finite. With `unchecked`
    /// (the binder whose channel gates are left to the run) each call checks its inputs and those
    /// gates. On a value that fails its check the state is restored and the error of check_values
    /// raised.
    template <class S, class F>
    bool run_head_groups(const Inputs<S>& inputs, Index B, State<S>& state, const GateBinder<S>* unchecked,
                         F&& forward_heads) const {
        const Index H = dims_.heads;
        const Index groups = std::min<Index>(H, std::max(options_.threads, 1));
        std::optional<State<S>> saved;
        if (unchecked) saved = state;
        std::vector<detail::ChunkedChecks> checks(static_cast<std::size_t>(B * groups));
        try {
            parallel_for(B * groups, options_.threads, [&](Index task) {
                const Index b = task / groups, group = task % groups;
                checks[static_cast<std::size_t>(task)] = forward_heads(b, group * H / groups, (group + 1) * H / groups);
            });
        } catch (...) {
            // A group that failed (out of memory, for one) leaves the others advanced.
            if (saved) state = *saved;
            throw;
        }
        const auto all = [&](bool detail::ChunkedChecks::*found) {
            return std::all_of(checks.begin(), checks.end(), [&](const auto& c) { return c.*found; });
        };
        if (!all(&detail::ChunkedChecks::inputs_valid)) {
            state = *saved;
            check_all_values(inputs, *unchecked);
            throw std::logic_error("the chunked form found an input value that check_values accepts");
        }
        return all(&detail::ChunkedChecks::outputs_finite);
    }

    /// Runs T tokens of B sequences from `state`, writing o [B, T, H, V] to `output`, and returns
    /// whether it checked every output finite. With `workspaces` (one per sequence and head) the token
    /// loop reuses their vectors. With `unchecked`, the binder whose gates with a value per channel
    /// have not been checked (see checks_values_while_reading), the run checks q, k, v and those
    /// gates: the chunked form as it reads them, restoring `state` and throwing as check_values
    /// does on a value that fails, and the other forms before they start.
    template <class S>
    bool run(const Inputs<S>& inputs, const Bound<S>& gates, Index B, Index T, State<S>& state, S* output,
             Workspace<S>* workspaces, const GateBinder<S>* unchecked) const {
        const Index H = dims_.heads, K = dims_.key, V = dims_.value, n = dims_.steps_per_token;
        const S scale = S(query_scale());
        const bool check_inputs = unchecked != nullptr;
        const std::vector<ChannelGateRows<S>> gate_rows =
            check_inputs ? unchecked->channel_gates() : std::vector<ChannelGateRows<S>>();
        const auto check_before = [&] {
            if (check_inputs) check_all_values(inputs, *unchecked);
        };

        if constexpr (detail::chunkable_types_v<Memory, Bias, Retention, Algorithm>) {
            if (options_.execution != Execution::reference && detail::chunkable(*this)) {
                if (runs_chunked(T)) {
                    return run_head_groups(inputs, B, state, unchecked, [&](Index b, Index first, Index last) {
                        return detail::forward_heads_chunked(*this, inputs, gates.retention, gates.algorithm, b, first,
                                                             last, T, state.heads, output, check_inputs, gate_rows);
                    });
                }
                check_before();
                parallel_for(B * H, options_.threads, [&](Index task) {
                    auto& W = state.heads[static_cast<std::size_t>(task)].memory;
                    detail::forward_head_fused(*this, inputs, gates.retention, gates.algorithm, task / H, task % H, T, W,
                                               output);
                });
                return false;
            }
        }
        if constexpr (detail::dplr_types_v<Memory, Retention, Algorithm>) {
            if (options_.execution != Execution::reference && runs_chunked(T)) {
                return run_head_groups(inputs, B, state, unchecked, [&](Index b, Index first, Index last) {
                    return detail::forward_heads_chunked_dplr(*this, inputs, gates.retention, gates.algorithm, b, first,
                                                              last, T, state.heads, output, check_inputs, gate_rows);
                });
            }
        }
        // The other forms read q, k and v with no check of their own, so a check left to the run
        // happens here.
        check_before();
        if constexpr (detail::mesa_types_v<Memory, Retention, Algorithm>) {
            if (options_.execution != Execution::reference && runs_chunked(T)) {
                parallel_for(B * H, options_.threads, [&](Index task) {
                    detail::forward_head_chunked_mesa(*this, inputs, gates.retention, gates.algorithm, task / H,
                                                      task % H, T, state.heads[static_cast<std::size_t>(task)],
                                                      output);
                });
                return false;
            }
        }
        parallel_for(B * H, options_.threads, [&](Index task) {
            const Index b = task / H, h = task % H;
            Workspace<S> local;
            Workspace<S>& work = workspaces ? workspaces[task] : local;
            HeadState<S>& head = state.heads[static_cast<std::size_t>(task)];
            const auto token = [&](Index t) {
                const S* q = inputs.q.data() + ((b * T + t) * H + h) * K;
                S* o = output + ((b * T + t) * H + h) * V;
                if (options_.read == ReadTiming::before_write) read(head, gates.algorithm, b, t, h, q, scale, work, o);
                for (Index i = 0; i < n; ++i) {
                    const Index step = t * n + i;
                    const S* k = inputs.k.data() + ((b * T * n + step) * H + h) * K;
                    const S* v = inputs.v.data() + ((b * T * n + step) * H + h) * V;
                    memory_.map(k, K, work.x);
                    WriteContext<Memory, Bias, Retention, S> ctx{memory_, bias_, retention_, gates.retention, dims_,
                                                                 b, h, t, step, i == 0, k, v, work.x, &gates.bias};
                    algorithm_.write(ctx, head.memory, head.algorithm, gates.algorithm, work.scratch);
                }
                if (options_.read == ReadTiming::after_write) read(head, gates.algorithm, b, t, h, q, scale, work, o);
            };
            Index t = 0;
            if constexpr (detail::minibatch_mlp_types_v<Memory, Retention, Algorithm>) {
                // Whole mini-batches as matrix products; a partial one at either end token by token.
                if (options_.execution != Execution::reference && detail::minibatch_mlp_exact(*this)) {
                    const Index size = algorithm_.minibatch_size;
                    while (t < T && head.algorithm.position != 0) token(t++);
                    for (; t + size <= T; t += size) {
                        detail::forward_minibatch_mlp(*this, inputs, gates.retention, gates.algorithm, &gates.bias, b, h,
                                                      T, t, head, output);
                    }
                }
            }
            for (; t < T; ++t) token(t);
        });
        return false;
    }

public:

    /// The state as named tensors [B, H, rows, cols] (for example W: [B, H, V, D]).
    template <class S>
    std::map<std::string, Tensor<S>> save_state(const State<S>& state) const {
        std::map<std::string, Tensor<S>> tensors;
        const Index H = dims_.heads;
        for (Index b = 0; b < state.batch; ++b) {
            for (Index h = 0; h < H; ++h) {
                const HeadState<S>& head = state.heads[static_cast<std::size_t>(b * H + h)];
                NamedMatrices<S> parts;
                memory_.save(head.memory, parts);
                if constexpr (requires { algorithm_.save(memory_, head.algorithm, parts); }) {
                    algorithm_.save(memory_, head.algorithm, parts);
                } else {
                    algorithm_.save(head.algorithm, parts);
                }
                for (auto& [name, m] : parts) {
                    auto [it, inserted] = tensors.try_emplace(name, Shape{state.batch, H, m.rows(), m.cols()});
                    Tensor<S>& tensor = it->second;
                    if (tensor.dim(2) != m.rows()) {
                        throw InputError("state tensor '" + name + "' has a different row count in head " +
                                         std::to_string(h) + " of sequence " + std::to_string(b));
                    }
                    S* dst = tensor.data() + (b * H + h) * m.rows() * m.cols();
                    for (Index i = 0; i < m.rows(); ++i) {
                        for (Index j = 0; j < m.cols(); ++j) dst[i * m.cols() + j] = m(i, j);
                    }
                }
            }
        }
        return tensors;
    }

    /// Builds a state from named tensors [B, H, rows, cols], checking every shape and that every
    /// value is finite.
    template <class S>
    State<S> load_state(const std::map<std::string, Tensor<S>>& tensors) const {
        if (tensors.empty()) throw InputError("state has no tensors");
        const Index B = tensors.begin()->second.rank() > 0 ? tensors.begin()->second.dim(0) : 0;
        const Index H = dims_.heads;
        for (const auto& [name, tensor] : tensors) {
            if (tensor.rank() != 4 || tensor.dim(0) != B || tensor.dim(1) != H) {
                throw InputError("state tensor '" + name + "' has shape " + shape_string(tensor.shape()) +
                                 ", expected [B, H, rows, cols] with B = " + std::to_string(B) + " and H = " +
                                 std::to_string(H));
            }
            detail::check_finite(tensor.view(), "state tensor '" + name + "'", "bhij");
        }
        State<S> state = initial_state<S>(B);
        for (Index b = 0; b < B; ++b) {
            for (Index h = 0; h < H; ++h) {
                NamedMatrices<S> parts;
                for (const auto& [name, tensor] : tensors) {
                    const Index rows = tensor.dim(2), cols = tensor.dim(3);
                    Mat<S> m(rows, cols);
                    const S* src = tensor.data() + (b * H + h) * rows * cols;
                    for (Index i = 0; i < rows; ++i) {
                        for (Index j = 0; j < cols; ++j) m(i, j) = src[i * cols + j];
                    }
                    parts.emplace(name, std::move(m));
                }
                HeadState<S>& head = state.heads[static_cast<std::size_t>(b * H + h)];
                memory_.load(head.memory, parts, dims_);
                if constexpr (requires { algorithm_.load(memory_, head.algorithm, parts, dims_); }) {
                    algorithm_.load(memory_, head.algorithm, parts, dims_);
                } else {
                    algorithm_.load(head.algorithm, parts, dims_);
                }
            }
        }
        return state;
    }

private:
    static void check_positive(Index value, const char* what) {
        if (value < 1) throw ConfigError(std::string(what) + " " + std::to_string(value) + " is invalid; valid is 1 or more");
    }

    template <class S>
    std::pair<Index, Index> check_shapes(const Inputs<S>& inputs) const {
        const Index H = dims_.heads, K = dims_.key, V = dims_.value, n = dims_.steps_per_token;
        if (inputs.q.empty() || inputs.q.rank() != 4) {
            throw InputError("input 'q' has shape " + shape_string(inputs.q.shape()) + ", expected [B, T, H, K] = [B, T, " +
                             std::to_string(H) + ", " + std::to_string(K) + "]");
        }
        const Index B = inputs.q.dim(0), T = inputs.q.dim(1);
        const auto expect = [&](const TensorView<S>& tensor, const char* name, Shape shape, const char* letters) {
            if (tensor.shape() != shape) {
                throw InputError(std::string("input '") + name + "' has shape " + shape_string(tensor.shape()) +
                                 ", expected " + shape_string(shape) + " = " + letters);
            }
        };
        expect(inputs.q, "q", {B, T, H, K}, "[B, T, H, K]");
        expect(inputs.k, "k", {B, T * n, H, K}, n == 1 ? "[B, T, H, K]" : "[B, T * n, H, K] with n pairs per token");
        expect(inputs.v, "v", {B, T * n, H, V}, n == 1 ? "[B, T, H, V]" : "[B, T * n, H, V] with n pairs per token");
        return {B, T};
    }

    template <class S>
    void check_values(const Inputs<S>& inputs) const {
        detail::check_finite(inputs.q, "input 'q'", "bthc", options_.threads);
        detail::check_finite(inputs.k, "input 'k'", "bthc", options_.threads);
        detail::check_finite(inputs.v, "input 'v'", "bthc", options_.threads);
    }

    template <class S>
    std::pair<Index, Index> check_inputs(const Inputs<S>& inputs) const {
        const auto dims = check_shapes(inputs);
        check_values(inputs);
        return dims;
    }

    template <class S, class AlgorithmBound>
    void read(const HeadState<S>& head, const AlgorithmBound& gates, Index b, Index t, Index h, const S* q,
              const S& scale, Workspace<S>& work, S* o) const {
        memory_.map(q, dims_.key, work.query);
        work.query *= scale;
        algorithm_.read(memory_, head.memory, head.algorithm, gates, b, t, h, work.query, work.y);
        for (Index c = 0; c < dims_.value; ++c) o[c] = work.y[c];
    }

    LayerOptions options_;
    LayerDims dims_;
    Memory memory_;
    Bias bias_;
    Retention retention_;
    Algorithm algorithm_;
};

}  // namespace miras
