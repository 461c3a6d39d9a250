// The matrix form of mini-batch gradient descent on MLP memories returns the outputs and the state
// of the token loop. The cases cover every rate form, depth, bias, LayerNorm and retention the form
// takes, with partial mini-batches at both ends of a call and across calls.
#include <algorithm>
#include <string>

#include <gtest/gtest.h>

#include "miras/layer/presets_deep.hpp"
#include "miras/miras.hpp"
#include "support.hpp"
#include "with_execution.hpp"

namespace {

using namespace miras;
using test::TensorMap;
using test::with_execution;

/// The largest relative difference between outputs, scaled by 1 + |reference|.
template <class S>
double output_error(const Tensor<S>& got, const Tensor<double>& want) {
    double worst = 0.0;
    for (Index i = 0; i < want.size(); ++i) {
        worst = std::max(worst, std::abs(static_cast<double>(got[i]) - want[i]) / (1.0 + std::abs(want[i])));
    }
    return worst;
}

/// Joins the outputs of two calls of T1 and T2 tokens into [B, T1 + T2, H, V].
template <class S>
Tensor<S> join_tokens(const Tensor<S>& first, const Tensor<S>& second) {
    const Index B = first.dim(0), T1 = first.dim(1), T2 = second.dim(1), row = first.dim(2) * first.dim(3);
    Tensor<S> out({B, T1 + T2, first.dim(2), first.dim(3)});
    for (Index b = 0; b < B; ++b) {
        std::copy_n(first.data() + b * T1 * row, T1 * row, out.data() + b * (T1 + T2) * row);
        std::copy_n(second.data() + b * T2 * row, T2 * row, out.data() + (b * (T1 + T2) + T1) * row);
    }
    return out;
}

/// Runs T tokens through the matrix form in two calls split at `split`, and through the token loop
/// in one call, from the zero state. Both are compared with the token loop in double on the same
/// inputs: the matrix form must be within `tolerance`, or within four times the token loop's own
/// error in S (a LayerNorm over a small branch output loses digits in float either way).
template <class S, class L>
void expect_matrix_form_matches(const L& base, Index T, Index split, double tolerance) {
    const L reference = with_execution(base, Execution::reference);
    const L fast = with_execution(base, Execution::automatic);
    ASSERT_TRUE(detail::minibatch_mlp_exact(fast)) << "the layer should take the matrix form";
    const Index B = 2;
    const TensorMap<S> in = test::cast_all<S>(test::random_inputs(base.dims(), base.gates(), B, T, 41));

    auto exact_state = reference.template initial_state<double>(B);
    const Tensor<double> exact = reference.forward(test::as_inputs(test::cast_all<double>(in)), exact_state);
    auto loop_state = reference.template initial_state<S>(B);
    const Tensor<S> loop = reference.forward(test::as_inputs(in), loop_state);

    auto state = fast.template initial_state<S>(B);
    const Tensor<S> first = fast.forward(test::as_inputs(test::token_slice(in, T, 0, split)), state);
    const Tensor<S> second = fast.forward(test::as_inputs(test::token_slice(in, T, split, T)), state);
    const Tensor<S> joined = join_tokens(first, second);

    EXPECT_LE(output_error(joined, exact), std::max(tolerance, 4.0 * output_error(loop, exact))) << "outputs";
    const auto exact_tensors = reference.save_state(exact_state);
    const auto loop_tensors = reference.save_state(loop_state);
    const auto got_tensors = fast.save_state(state);
    ASSERT_EQ(got_tensors.size(), exact_tensors.size());
    for (const auto& [name, tensor] : got_tensors) {
        const double loop_error = test::max_rel_diff(loop_tensors.at(name), exact_tensors.at(name));
        EXPECT_LE(test::max_rel_diff(tensor, exact_tensors.at(name)), std::max(tolerance, 4.0 * loop_error))
            << "state tensor " << name;
    }
}

using Deep = Layer<MlpMemory, L2Bias, DecayRetention, MiniBatchGD>;
using DeepHuber = Layer<MlpMemory, HuberBias, DecayRetention, MiniBatchGD>;

const LayerOptions options{.heads = 2, .key_dim = 6, .value_dim = 6};

/// A two-layer memory with the given extras, a per-token decay at the given placement, and
/// per-token mini-batch steps of `size` tokens.
Deep decayed(Placement placement, Index size, bool biases, MlpNorm norm, double clip = 0.0, Index depth = 2,
             Activation activation = Activation::gelu) {
    MlpMemory memory = presets::miras_memory(norm != MlpNorm::none);
    memory.depth = depth;
    memory.activation = activation;
    memory.biases = biases;
    memory.norm = norm;
    MiniBatchGD algorithm = presets::online_gd(size);
    algorithm.clip_norm = clip;
    return Deep(options, memory, {}, DecayRetention{presets::per_token(), placement}, algorithm);
}

template <class S>
void expect_all_forms(double tolerance) {
    // T = 29 with mini-batches of 4 or 8 leaves partial mini-batches at the split and at the end.
    expect_matrix_form_matches<S>(presets::ttt_mlp(options, 8), 29, 11, tolerance);
    expect_matrix_form_matches<S>(presets::ttt_linear(options, 4), 29, 6, tolerance);
    expect_matrix_form_matches<S>(presets::ttt_linear_fla(options, 4), 29, 9, tolerance);
    expect_matrix_form_matches<S>(decayed(Placement::decay_then_gradient, 4, true, MlpNorm::none), 29, 5, tolerance);
    expect_matrix_form_matches<S>(decayed(Placement::gradient_then_decay, 4, false, MlpNorm::plain), 29, 5, tolerance);
    expect_matrix_form_matches<S>(decayed(Placement::gradient_then_decay, 8, true, MlpNorm::none, 0.05, 3), 29, 8,
                                  tolerance);
    expect_matrix_form_matches<S>(decayed(Placement::decay_then_gradient, 4, false, MlpNorm::none, 0.0, 1), 29, 12,
                                  tolerance);

    for (Activation activation : {Activation::silu, Activation::tanh, Activation::relu}) {
        expect_matrix_form_matches<S>(
            decayed(Placement::decay_then_gradient, 4, true, MlpNorm::none, 0.0, 2, activation), 29, 10, tolerance);
    }

    // Titans: momentum and a forget gate; with biases, a LayerNorm, clipping, without momentum.
    expect_matrix_form_matches<S>(presets::titans(options, 2, 4), 29, 6, tolerance);
    expect_matrix_form_matches<S>(presets::titans(options, 3, 8), 29, 11, tolerance);
    for (bool use_momentum : {true, false}) {
        MlpMemory memory = presets::miras_memory(true);
        memory.biases = true;
        Momentum algorithm{presets::per_token(), presets::per_token()};
        algorithm.minibatch_size = 4;
        algorithm.clip_norm = 0.05;
        algorithm.use_momentum = use_momentum;
        expect_matrix_form_matches<S>(
            presets::Titans(options, memory, {}, DecayRetention{presets::per_token(), Placement::decay_then_gradient},
                            algorithm),
            29, 9, tolerance);
    }

    // Keys of 20 (a hidden layer of 80) and mini-batches of 16 and 24 give the products with the
    // weights full packets of tokens, and for 24 floats a partial last group. The rows of W fill
    // blocks of eight with rows left over.
    const LayerOptions wide{.heads = 1, .key_dim = 20, .value_dim = 20};
    expect_matrix_form_matches<S>(presets::titans(wide, 2, 16), 53, 21, tolerance);
    expect_matrix_form_matches<S>(presets::ttt_mlp(wide, 24), 53, 30, tolerance);

    MlpMemory memory = presets::miras_memory(true);
    expect_matrix_form_matches<S>(DeepHuber(options, memory, HuberBias{HuberKind::mixture, presets::per_token()},
                                            presets::forget_gate(), presets::online_gd(4)),
                                  29, 7, tolerance);
}

// In double the token loop is the reference itself, so the bound cannot follow its error. A
// LayerNorm over the small branch output of a fresh memory magnifies rounding. In the decayed case
// with the plain LayerNorm, the matrix form's weights differ from the loop's by up to 1.5e-11 with
// -O3 (at most 4e-12 in the other cases).
TEST(MiniBatchMlp, MatchesTokenLoopInDouble) { expect_all_forms<double>(5e-11); }
TEST(MiniBatchMlp, MatchesTokenLoopInFloat) { expect_all_forms<float>(2e-4); }

TEST(MiniBatchMlp, ClippingActsOnTestInputs) {
    // The clipped case above is a real test only if the clip acts on these inputs.
    const Deep clipped = decayed(Placement::gradient_then_decay, 8, true, MlpNorm::none, 0.05, 3);
    const Deep free = decayed(Placement::gradient_then_decay, 8, true, MlpNorm::none, 0.0, 3);
    const TensorMap<double> in = test::random_inputs(clipped.dims(), clipped.gates(), 1, 16, 41);
    const Tensor<double> a = clipped.forward(test::as_inputs(in));
    const Tensor<double> b = free.forward(test::as_inputs(in));
    EXPECT_GT(test::max_rel_diff(a, b), 1e-6);
}

TEST(MiniBatchMlp, OtherLayersKeepTheTokenLoop) {
    EXPECT_FALSE(detail::minibatch_mlp_exact(presets::moneta(options)));
    EXPECT_FALSE(detail::minibatch_mlp_exact(presets::titans(options, 2, 1)));
    Momentum omega{presets::per_token(), presets::per_token()};
    omega.minibatch_size = 4;
    omega.window = 2;
    EXPECT_FALSE(detail::minibatch_mlp_exact(presets::Titans(options, presets::miras_memory(false), {},
                                                             presets::forget_gate(), omega)));
    EXPECT_FALSE(detail::minibatch_mlp_exact(decayed(Placement::gradient_then_decay, 1, false, MlpNorm::none)));
    LayerOptions before = options;
    before.read = ReadTiming::before_write;
    EXPECT_FALSE(detail::minibatch_mlp_exact(presets::ttt_mlp(before, 8)));
}

}  // namespace
