// The tape scalar Var<double> against closed-form derivatives, and generic_layer_backward on every
// preset against central finite differences of Layer::forward in double: the gradient of
// sum(R * o) + sum over state tensors of <R_s, s_T> with respect to q, k, v, every per-token gate
// and every initial-state tensor. T = 7 with checkpoints every 3 tokens, so segment boundaries fall
// inside mini-batches and Omega windows. On the linear presets it covers, the pass must also agree
// with the hand-written layer_backward.
#include <cmath>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "miras/layer/generic_backward.hpp"
#include "miras/layer/presets.hpp"
#include "miras/layer/presets_deep.hpp"

namespace {

using namespace miras;
using TensorMap = std::map<std::string, Tensor<double>>;
using V = Var<double>;

// ---------------------------------------------------------------------------------------------
// The tape itself.

/// d f(x) / dx at x by one reverse sweep.
double tape_derivative(const std::function<V(const V&)>& f, double x) {
    Tape<double> tape;
    TapeScope<double> scope(tape);
    const V input = V::variable(x);
    const V output = f(input);
    tape.zero_adjoints();
    if (output.constant()) return 0.0;
    tape.adjoint(output.index) = 1.0;
    tape.backward();
    return tape.adjoint(input.index);
}

struct UnaryCase {
    const char* name;
    std::function<V(const V&)> f;
    std::function<double(double)> derivative;  // closed form
    double x;
};

std::vector<UnaryCase> unary_cases() {
    return {
        {"exp", [](const V& a) { return exp(a); }, [](double x) { return std::exp(x); }, 0.3},
        {"log", [](const V& a) { return log(a); }, [](double x) { return 1.0 / x; }, 1.7},
        {"log1p", [](const V& a) { return log1p(a); }, [](double x) { return 1.0 / (1.0 + x); }, 0.4},
        {"expm1", [](const V& a) { return expm1(a); }, [](double x) { return std::exp(x); }, -0.6},
        {"sqrt", [](const V& a) { return sqrt(a); }, [](double x) { return 0.5 / std::sqrt(x); }, 2.3},
        {"abs_negative", [](const V& a) { return abs(a); }, [](double) { return -1.0; }, -0.8},
        {"fabs_positive", [](const V& a) { return fabs(a); }, [](double) { return 1.0; }, 0.8},
        {"tanh", [](const V& a) { return tanh(a); }, [](double x) { return 1.0 - std::tanh(x) * std::tanh(x); }, 0.7},
        {"sin", [](const V& a) { return sin(a); }, [](double x) { return std::cos(x); }, 1.1},
        {"cos", [](const V& a) { return cos(a); }, [](double x) { return -std::sin(x); }, 1.1},
        {"erf", [](const V& a) { return erf(a); }, [](double x) { return 2.0 / std::sqrt(M_PI) * std::exp(-x * x); }, 0.5},
        {"pow_real", [](const V& a) { return pow(a, 2.5); }, [](double x) { return 2.5 * std::pow(x, 1.5); }, 1.3},
        {"pow_int", [](const V& a) { return pow(a, 3); }, [](double x) { return 3.0 * x * x; }, -1.2},
        {"negate", [](const V& a) { return -a; }, [](double) { return -1.0; }, 0.9},
        {"add_constant", [](const V& a) { return a + 2.0; }, [](double) { return 1.0; }, 0.9},
        {"constant_minus", [](const V& a) { return 2.0 - a; }, [](double) { return -1.0; }, 0.9},
        {"times_constant", [](const V& a) { return 3 * a; }, [](double) { return 3.0; }, 0.9},
        {"constant_over", [](const V& a) { return 2.0 / a; }, [](double x) { return -2.0 / (x * x); }, 0.9},
        {"over_constant", [](const V& a) { return a / 4.0; }, [](double) { return 0.25; }, 0.9},
        {"square", [](const V& a) { return a * a; }, [](double x) { return 2.0 * x; }, -0.7},
        {"quotient", [](const V& a) { return (a + 1.0) / (a * a + 2.0); },
         [](double x) { return ((x * x + 2.0) - (x + 1.0) * 2.0 * x) / ((x * x + 2.0) * (x * x + 2.0)); }, 0.6},
        {"compound", [](const V& a) { V s = a; s *= a; s += a; s -= 1.0; s /= a; return s; },
         [](double x) { return 1.0 + 1.0 / (x * x); }, 1.4},
        {"max_picks_larger", [](const V& a) { return max(a, V(0.1)); }, [](double) { return 1.0; }, 0.5},
        {"min_picks_smaller", [](const V& a) { return min(a * 2.0, V(5.0)); }, [](double) { return 2.0; }, 0.5},
    };
}

TEST(Tape, UnaryFunctionsMatchClosedForms) {
    for (const UnaryCase& c : unary_cases()) {
        const double expected = c.derivative(c.x);
        EXPECT_NEAR(tape_derivative(c.f, c.x), expected, 1e-14 * std::max(1.0, std::abs(expected))) << c.name;
    }
}

TEST(Tape, ValuesMatchDouble) {
    Tape<double> tape;
    TapeScope<double> scope(tape);
    const V x = V::variable(0.7);
    EXPECT_EQ(exp(x).v, std::exp(0.7));
    EXPECT_EQ(erf(x).v, std::erf(0.7));
    EXPECT_EQ((x / 3.0).v, 0.7 / 3.0);
    EXPECT_EQ(pow(x, 2.5).v, std::pow(0.7, 2.5));
    EXPECT_TRUE(x < 1.0);
    EXPECT_TRUE(2 > x);
    EXPECT_TRUE(x == V(0.7));
    EXPECT_TRUE(isfinite(x));
    EXPECT_FALSE(isfinite(x / 0.0));
    EXPECT_TRUE(isnan(sqrt(V::variable(-1.0))));
    EXPECT_EQ(value_of(x), 0.7);
    EXPECT_STREQ(scalar_name<V>(), "var");
}

TEST(Tape, ConstantsRecordNothing) {
    Tape<double> tape;
    TapeScope<double> scope(tape);
    const V a(2.0), b(3.0);
    const V c = exp(a * b + 1.0) / b;
    EXPECT_TRUE(c.constant());
    EXPECT_EQ(tape.size(), 0u);
    const V x = V::variable(1.0);
    const V y = x + a;  // a constant added keeps the variable's node
    EXPECT_EQ(y.index, x.index);
    EXPECT_EQ(tape.size(), 1u);
}

TEST(Tape, TwoVariablesGiveBothPartials) {
    Tape<double> tape;
    TapeScope<double> scope(tape);
    const V x = V::variable(1.3), y = V::variable(-0.4);
    const V f = x * y + sin(x) * exp(y) - x / y;
    tape.zero_adjoints();
    tape.adjoint(f.index) = 1.0;
    tape.backward();
    const double dx = -0.4 + std::cos(1.3) * std::exp(-0.4) - 1.0 / -0.4;
    const double dy = 1.3 + std::sin(1.3) * std::exp(-0.4) + 1.3 / (0.4 * 0.4);
    EXPECT_NEAR(tape.adjoint(x.index), dx, 1e-14);
    EXPECT_NEAR(tape.adjoint(y.index), dy, 1e-14);
}

// Gradient of f(A) = sum(w * tanh(A A^T x)) through Eigen products, against central differences.
TEST(Tape, EigenExpressionMatchesCentralDifferences) {
    constexpr Index n = 4;
    std::mt19937_64 rng(5);
    std::uniform_real_distribution<double> u(-1, 1);
    Mat<double> A(n, n);
    Vec<double> x(n), w(n);
    for (Index i = 0; i < n * n; ++i) A.data()[i] = u(rng);
    for (Index i = 0; i < n; ++i) x[i] = u(rng), w[i] = u(rng);
    const auto value = [&](const Mat<double>& M) {
        const Vec<double> y = M * (M.transpose() * x);
        double total = 0;
        for (Index i = 0; i < n; ++i) total += w[i] * std::tanh(y[i]);
        return total;
    };

    Tape<double> tape;
    TapeScope<double> scope(tape);
    Mat<V> Av(n, n);
    for (Index i = 0; i < n * n; ++i) Av.data()[i] = V::variable(A.data()[i]);
    const Vec<V> y = Av * (Av.transpose() * x.cast<V>());
    V total(0.0);
    for (Index i = 0; i < n; ++i) total += w[i] * tanh(y[i]);
    EXPECT_NEAR(total.v, value(A), 1e-14);
    tape.zero_adjoints();
    tape.adjoint(total.index) = 1.0;
    tape.backward();

    const double h = 1e-6;
    for (Index i = 0; i < n * n; ++i) {
        Mat<double> up = A, down = A;
        up.data()[i] += h;
        down.data()[i] -= h;
        const double numeric = (value(up) - value(down)) / (2 * h);
        EXPECT_NEAR(tape.adjoint(Av.data()[i].index), numeric, 1e-8) << "entry " << i;
    }
}

TEST(Tape, VariableWithoutScopeRaises) {
    EXPECT_THROW(V::variable(1.0), std::logic_error);
    const V a(1.0);
    EXPECT_NO_THROW(exp(a) * a);  // constants need no tape
}

TEST(Tape, ScopesNestAndRestore) {
    Tape<double> outer, inner;
    TapeScope<double> a(outer);
    const V x = V::variable(1.0);
    {
        TapeScope<double> b(inner);
        (void)V::variable(2.0);
        (void)V::variable(3.0);
    }
    const V y = x * x;
    EXPECT_EQ(outer.size(), 2u);
    EXPECT_EQ(inner.size(), 2u);
    EXPECT_EQ(y.index, 1);
}

// ---------------------------------------------------------------------------------------------
// generic_layer_backward on every preset.

constexpr Index kB = 2, kT = 7, kH = 2, kD = 3, kCheckpoint = 3, kWarmup = 5;

LayerOptions options(Index steps = 1) {
    LayerOptions o;
    o.heads = kH;
    o.key_dim = kD;
    o.value_dim = kD;  // equal, because the vector memory needs it
    o.steps_per_token = steps;
    return o;
}

Tensor<double> uniform(std::mt19937_64& rng, Shape shape, double lo, double hi) {
    std::uniform_real_distribution<double> u(lo, hi);
    Tensor<double> t(std::move(shape));
    for (Index i = 0; i < t.size(); ++i) t[i] = u(rng);
    return t;
}

/// q, k, v and every per-token gate, drawn from the gate's valid range: log-gates in [-1, -0.05],
/// rates in [0.1, 0.9], positive values in [0.5, 1.5], free vectors in [-0.5, 0.5].
TensorMap random_inputs(const LayerDims& dims, const std::vector<GateSpec>& gates, Index T, std::mt19937_64& rng) {
    const Index n = dims.steps_per_token;
    TensorMap in;
    in["q"] = uniform(rng, {kB, T, kH, dims.key}, -1, 1);
    in["k"] = uniform(rng, {kB, T * n, kH, dims.key}, -1, 1);
    in["v"] = uniform(rng, {kB, T * n, kH, dims.value}, -1, 1);
    for (const GateSpec& spec : gates) {
        if (!spec.config.per_token) continue;
        Shape shape{kB, T * (spec.per_step ? n : 1), kH};
        if (spec.config.axis == Axis::key) shape.push_back(spec.channels > 0 ? spec.channels : dims.key_features);
        if (spec.config.axis == Axis::value) shape.push_back(spec.channels > 0 ? spec.channels : dims.value);
        switch (spec.range) {
            case Range::log_gate: in[spec.name] = uniform(rng, shape, -1, -0.05); break;
            case Range::nonnegative: in[spec.name] = uniform(rng, shape, 0.1, 0.9); break;
            case Range::positive: in[spec.name] = uniform(rng, shape, 0.5, 1.5); break;
            case Range::any: in[spec.name] = uniform(rng, shape, -0.5, 0.5); break;
        }
    }
    return in;
}

Inputs<double> as_inputs(const TensorMap& tensors) {
    Inputs<double> inputs;
    for (const auto& [name, tensor] : tensors) {
        if (name == "q") inputs.q = tensor.view();
        else if (name == "k") inputs.k = tensor.view();
        else if (name == "v") inputs.v = tensor.view();
        else inputs.gates.emplace(name, tensor.view());
    }
    return inputs;
}

/// Returns whether a state tensor is a count, not a real number to differentiate (the mini-batch position).
bool is_counter(const std::string& name) { return name == "position"; }

/// One preset behind a virtual interface, so that the table can hold every layer type.
class Model {
public:
    virtual ~Model() = default;
    virtual LayerDims dims() const = 0;
    virtual std::vector<GateSpec> gates() const = 0;
    /// The state after a warm-up run from the initial state, so that every state tensor is in use.
    virtual TensorMap warm_state(const TensorMap& warmup) const = 0;
    /// o and the final state from `state`.
    virtual Tensor<double> run(const TensorMap& in, const TensorMap& state, TensorMap& final_state) const = 0;
    virtual LayerGradients<double> backward(const TensorMap& in, const TensorMap& state, const Tensor<double>& d_output,
                                            const TensorMap* d_final_state, Index checkpoint_every) const = 0;
};

template <class L>
class ModelOf final : public Model {
public:
    explicit ModelOf(L layer) : layer_(std::move(layer)) {}
    LayerDims dims() const override { return layer_.dims(); }
    std::vector<GateSpec> gates() const override { return layer_.gates(); }
    TensorMap warm_state(const TensorMap& warmup) const override {
        auto state = layer_.template initial_state<double>(kB);
        (void)layer_.forward(as_inputs(warmup), state);
        return layer_.save_state(state);
    }
    Tensor<double> run(const TensorMap& in, const TensorMap& state, TensorMap& final_state) const override {
        auto s = layer_.load_state(state);
        Tensor<double> o = layer_.forward(as_inputs(in), s);
        final_state = layer_.save_state(s);
        return o;
    }
    LayerGradients<double> backward(const TensorMap& in, const TensorMap& state, const Tensor<double>& d_output,
                                    const TensorMap* d_final_state, Index checkpoint_every) const override {
        const auto s = layer_.load_state(state);
        return generic_layer_backward(layer_, as_inputs(in), &s, d_output.view(), d_final_state, checkpoint_every);
    }
    const L& layer() const { return layer_; }

private:
    L layer_;
};

struct Case {
    std::string name;
    std::function<std::unique_ptr<Model>()> make;
};

template <class L>
Case make_case(std::string name, L layer) {
    return {std::move(name), [layer] { return std::make_unique<ModelOf<L>>(layer); }};
}

/// Builds Memora from random weights. The preset starts from zero weights, which the first softmax
/// makes uniform per row. That is a fixed point where every hidden unit is equal and the LayerNorm
/// input is constant, so the loss is far from linear at the scale of a finite-difference step.
presets::Memora memora_from(MlpInit init) {
    using namespace presets;
    return Memora(options(), miras_memory(true, init), {}, MirrorRetention{MirrorKind::kl, per_token()}, online_gd());
}

std::vector<Case> all_cases() {
    using namespace presets;
    const MlpInit init{false, 0.3, 3};
    std::vector<Case> table;
    table.push_back(make_case("LinearAttention", linear_attention(options())));
    table.push_back(make_case("RetNet", retnet(options())));
    table.push_back(make_case("Lightning", lightning_attention(options(), 1, 3)));
    table.push_back(make_case("Mamba2", mamba2(options())));
    table.push_back(make_case("GLA", gla(options())));
    table.push_back(make_case("HGRN2", hgrn2(options())));
    table.push_back(make_case("ElementwiseRnn", elementwise_linear_rnn(options())));
    table.push_back(make_case("DeltaNet", deltanet(options())));
    table.push_back(make_case("GatedDeltaNet", gated_deltanet(options())));
    table.push_back(make_case("KDA", kda(options())));
    table.push_back(make_case("Comba", comba(options())));
    table.push_back(make_case("DeltaProduct", deltaproduct(options(), 2)));
    table.push_back(make_case("Rwkv7", rwkv7(options())));
    table.push_back(make_case("LonghornFull", longhorn(options(), false)));
    table.push_back(make_case("LonghornDiagonal", longhorn(options(), true)));
    table.push_back(make_case("MesaNetExact", mesanet(options(), {0.7})));
    table.push_back(make_case("MesaNetConjugateGradient", mesanet(options(), {1.0}, LinearSolver::conjugate_gradient, 2)));
    table.push_back(make_case("SoftmaxAttention", softmax_attention(options())));
    table.push_back(make_case("SlidingWindow", sliding_window_attention(options(), 3)));

    table.push_back(make_case("TttLinear", ttt_linear(options(), 2, {1.1}, {0.1}, init)));
    table.push_back(make_case("TttMlp", ttt_mlp(options(), 2, {0.9}, {0.0}, init)));
    table.push_back(make_case("TttLinearFla", ttt_linear_fla(options(), 2)));
    table.push_back(make_case("Titans", titans(options(), 2, 1, init)));
    table.push_back(make_case("TitansMiniBatch", titans(options(), 2, 2, init)));
    table.push_back(make_case("Moneta", moneta(options(), 3.0, 4.0, init)));
    table.push_back(make_case("Yaad", yaad(options(), init)));
    table.push_back(make_case("Memora", memora_from(init)));
    table.push_back(make_case("OmegaNet", omeganet(options(), 3, 1, init)));
    table.push_back(make_case("OmegaNetPolynomial", omeganet(options(), 3, 2, init)));
    table.push_back(make_case("Atlas", atlas(options(), 3, 5, 1, init)));
    return table;
}

const std::vector<Case>& cases() {
    static const std::vector<Case> table = all_cases();
    return table;
}

/// Inputs, a warm initial state and the loss weights of one preset.
struct Problem {
    TensorMap inputs, state, r_state;
    Tensor<double> r_output;

    Problem(const Model& model, std::uint64_t seed) {
        std::mt19937_64 rng(seed);
        inputs = random_inputs(model.dims(), model.gates(), kT, rng);
        const TensorMap warmup = random_inputs(model.dims(), model.gates(), kWarmup, rng);
        state = model.warm_state(warmup);
        r_output = uniform(rng, {kB, kT, kH, model.dims().value}, -1, 1);
        TensorMap final_state;
        (void)model.run(inputs, state, final_state);
        for (const auto& [name, tensor] : final_state) {
            if (!is_counter(name)) r_state[name] = uniform(rng, tensor.shape(), -1, 1);
        }
    }

    double loss(const Model& model) const {
        TensorMap final_state;
        const Tensor<double> o = model.run(inputs, state, final_state);
        double total = 0;
        for (Index i = 0; i < o.size(); ++i) total += r_output[i] * o[i];
        for (const auto& [name, r] : r_state) {
            const Tensor<double>& s = final_state.at(name);
            for (Index i = 0; i < s.size(); ++i) total += r[i] * s[i];
        }
        return total;
    }
};

/// Picks the first and the last entry of a tensor and two at random.
std::vector<Index> sample_entries(const Tensor<double>& tensor, std::mt19937_64& rng) {
    if (tensor.size() == 0) return {};
    std::uniform_int_distribution<Index> any(0, tensor.size() - 1);
    std::vector<Index> entries{0, tensor.size() - 1, any(rng), any(rng)};
    return entries;
}

double max_abs(const Tensor<double>& t) {
    double m = 0;
    for (Index i = 0; i < t.size(); ++i) m = std::max(m, std::abs(t[i]));
    return m;
}

class GenericBackward : public ::testing::TestWithParam<std::size_t> {};

INSTANTIATE_TEST_SUITE_P(Presets, GenericBackward, ::testing::Range<std::size_t>(0, cases().size()),
                         [](const auto& info) { return cases()[info.param].name; });

TEST_P(GenericBackward, MatchesCentralDifferences) {
    const std::unique_ptr<Model> model = cases()[GetParam()].make();
    Problem p(*model, 300 + GetParam());
    const LayerGradients<double> g = model->backward(p.inputs, p.state, p.r_output, &p.r_state, kCheckpoint);

    TensorMap unused;
    const Tensor<double> o = model->run(p.inputs, p.state, unused);
    ASSERT_EQ(g.output.shape(), o.shape());
    for (Index i = 0; i < o.size(); ++i) ASSERT_NEAR(g.output[i], o[i], 1e-12) << "output " << i;

    std::mt19937_64 rng(900 + GetParam());
    // Central differences D(h) at steps h and h / 2, extrapolated (Richardson) to cancel the h^2
    // term: R(h) = (4 D(h / 2) - D(h)) / 3. The deep memories have large higher derivatives (Moneta)
    // or jump where a bias switches branch (Yaad), so no single step suits every preset. The
    // estimate used is the R(h) of a ladder of steps that differs least from both its neighbours.
    const auto central = [&](Tensor<double>& tensor, Index i, double step) {
        const double saved = tensor[i];
        tensor[i] = saved + step;
        const double up = p.loss(*model);
        tensor[i] = saved - step;
        const double down = p.loss(*model);
        tensor[i] = saved;
        return (up - down) / (2 * step);
    };
    const auto numeric_derivative = [&](Tensor<double>& tensor, Index i) {
        std::vector<double> estimates;
        for (double step : {1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6, 3e-7, 1e-7}) {
            estimates.push_back((4 * central(tensor, i, step / 2) - central(tensor, i, step)) / 3);
        }
        const auto spread = [&](std::size_t k) {
            return std::max(std::abs(estimates[k - 1] - estimates[k]), std::abs(estimates[k] - estimates[k + 1]));
        };
        std::size_t best = 1;
        for (std::size_t k = 2; k + 1 < estimates.size(); ++k) {
            if (spread(k) < spread(best)) best = k;
        }
        return estimates[best];
    };
    const auto check = [&](TensorMap& owner, const std::string& name, const Tensor<double>& analytic) {
        Tensor<double>& tensor = owner.at(name);
        ASSERT_EQ(analytic.shape(), tensor.shape()) << name;
        for (Index i : sample_entries(tensor, rng)) {
            const double numeric = numeric_derivative(tensor, i);
            EXPECT_NEAR(analytic[i], numeric, 1e-6 * std::max(1.0, std::abs(numeric))) << name << " entry " << i;
        }
    };
    // A gradient that is zero everywhere would make the comparison prove nothing. State tensors
    // may be unused (the start weights of a finished mini-batch), so only their sum must move.
    const auto check_input = [&](const std::string& name, const Tensor<double>& analytic) {
        EXPECT_GT(max_abs(analytic), 1e-8) << "the gradient of " << name << " is zero everywhere";
        check(p.inputs, name, analytic);
    };
    check_input("q", g.q);
    check_input("k", g.k);
    check_input("v", g.v);
    for (const GateSpec& spec : model->gates()) {
        if (!spec.config.per_token) continue;
        ASSERT_TRUE(g.gates.count(spec.name)) << "no gradient for gate " << spec.name;
        check_input(spec.name, g.gates.at(spec.name));
    }
    ASSERT_EQ(g.initial_state_tensors.size(), p.state.size());
    double state_gradient = 0;
    for (const auto& [name, gradient] : g.initial_state_tensors) {
        if (is_counter(name) || gradient.size() == 0) continue;
        state_gradient = std::max(state_gradient, max_abs(gradient));
        check(p.state, name, gradient);
    }
    EXPECT_GT(state_gradient, 1e-8) << "the gradient of the initial state is zero everywhere";
}

// Where the checkpoints fall must not change the gradients beyond rounding. The checkpoints come
// from the forward in double, whose sums may round differently from the tape's, and the deep
// memories amplify that, hence a tolerance well above the unit roundoff.
TEST_P(GenericBackward, CheckpointSpacingChangesNothing) {
    const std::unique_ptr<Model> model = cases()[GetParam()].make();
    Problem p(*model, 500 + GetParam());
    const LayerGradients<double> whole = model->backward(p.inputs, p.state, p.r_output, &p.r_state, kT + 4);
    for (Index c : {1, 2, 5}) {
        const LayerGradients<double> g = model->backward(p.inputs, p.state, p.r_output, &p.r_state, c);
        const auto same = [&](const Tensor<double>& a, const Tensor<double>& b, const std::string& name) {
            ASSERT_EQ(a.shape(), b.shape()) << name;
            for (Index i = 0; i < a.size(); ++i) {
                EXPECT_NEAR(a[i], b[i], 1e-9 * std::max(1.0, std::abs(b[i]))) << name << " " << i << " with C = " << c;
            }
        };
        same(g.q, whole.q, "q");
        same(g.k, whole.k, "k");
        same(g.v, whole.v, "v");
        for (const auto& [name, t] : whole.gates) same(g.gates.at(name), t, name);
        for (const auto& [name, t] : whole.initial_state_tensors) same(g.initial_state_tensors.at(name), t, name);
    }
}

// ---------------------------------------------------------------------------------------------
// Agreement with the hand-written layer_backward.

template <class L>
void check_against_layer_backward(const L& layer, std::uint64_t seed) {
    const ModelOf<L> model(layer);
    Problem p(model, seed);
    const auto state = layer.load_state(p.state);
    const TensorView<double> d_state = p.r_state.at("W").view();
    const LayerGradients<double> hand =
        layer_backward(layer, as_inputs(p.inputs), &state, p.r_output.view(), &d_state, kCheckpoint);
    const LayerGradients<double> tape =
        generic_layer_backward(layer, as_inputs(p.inputs), &state, p.r_output.view(), &p.r_state, kCheckpoint);
    const auto same = [](const Tensor<double>& a, const Tensor<double>& b, const std::string& name) {
        ASSERT_EQ(a.shape(), b.shape()) << name;
        for (Index i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-12 * std::max(1.0, std::abs(b[i]))) << name << " " << i;
    };
    same(tape.output, hand.output, "output");
    same(tape.q, hand.q, "q");
    same(tape.k, hand.k, "k");
    same(tape.v, hand.v, "v");
    ASSERT_EQ(tape.gates.size(), hand.gates.size());
    for (const auto& [name, t] : hand.gates) same(tape.gates.at(name), t, name);
    same(tape.initial_state, hand.initial_state, "initial_state");
    same(tape.initial_state_tensors.at("W"), hand.initial_state, "initial_state_tensors W");
}

TEST(GenericBackwardAgrees, WithLayerBackwardOnLinearPresets) {
    using namespace presets;
    check_against_layer_backward(linear_attention(options()), 1);
    check_against_layer_backward(retnet(options()), 2);
    check_against_layer_backward(mamba2(options()), 3);
    check_against_layer_backward(gla(options()), 4);
    check_against_layer_backward(deltanet(options()), 5);
    check_against_layer_backward(gated_deltanet(options()), 6);
    check_against_layer_backward(kda(options()), 7);
    check_against_layer_backward(
        GatedDeltaNet(options(), {}, {}, per_token_decay(Axis::value, Placement::gradient_then_decay),
                      GradientStep{GateConfig::input(Axis::key)}),
        8);
    LayerOptions before = options();
    before.read = ReadTiming::before_write;
    check_against_layer_backward(deltanet(before), 9);
}

// Float inputs are differentiated in double and returned in float.
TEST(GenericBackwardFloat, AgreesWithDouble) {
    const auto layer = presets::titans(options(), 2, 2, MlpInit{false, 0.3, 3});
    const ModelOf<decltype(layer)> model(layer);
    Problem p(model, 11);
    const LayerGradients<double> wide = model.backward(p.inputs, p.state, p.r_output, &p.r_state, kCheckpoint);

    std::map<std::string, Tensor<float>> narrow_inputs, narrow_state, narrow_r_state;
    for (const auto& [name, t] : p.inputs) narrow_inputs.emplace(name, tensor_cast<float>(t.view()));
    for (const auto& [name, t] : p.state) narrow_state.emplace(name, tensor_cast<float>(t.view()));
    for (const auto& [name, t] : p.r_state) narrow_r_state.emplace(name, tensor_cast<float>(t.view()));
    const Tensor<float> r_output = tensor_cast<float>(p.r_output.view());
    Inputs<float> in;
    for (const auto& [name, t] : narrow_inputs) {
        if (name == "q") in.q = t.view();
        else if (name == "k") in.k = t.view();
        else if (name == "v") in.v = t.view();
        else in.gates.emplace(name, t.view());
    }
    const auto state = layer.load_state(narrow_state);
    const LayerGradients<float> g = generic_layer_backward(layer, in, &state, r_output.view(), &narrow_r_state, 2);

    const auto close = [](const Tensor<float>& a, const Tensor<double>& b, const std::string& name) {
        ASSERT_EQ(a.shape(), b.shape()) << name;
        for (Index i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-4 * std::max(1.0, std::abs(b[i]))) << name << " " << i;
    };
    close(g.output, wide.output, "output");
    close(g.q, wide.q, "q");
    close(g.k, wide.k, "k");
    close(g.v, wide.v, "v");
    for (const auto& [name, t] : wide.gates) close(g.gates.at(name), t, name);
    for (const auto& [name, t] : wide.initial_state_tensors) close(g.initial_state_tensors.at(name), t, name);
}

// Several threads give the same numbers as one, since each sequence runs on its own tape.
TEST(GenericBackwardThreads, MatchOneThread) {
    LayerOptions o = options();
    o.threads = 2;
    const auto layer = presets::atlas(o, 3, 5, 1, MlpInit{false, 0.3, 3});
    const ModelOf<decltype(layer)> threaded(layer);
    const ModelOf<decltype(layer)> single(presets::atlas(options(), 3, 5, 1, MlpInit{false, 0.3, 3}));
    Problem p(single, 13);
    const LayerGradients<double> a = threaded.backward(p.inputs, p.state, p.r_output, &p.r_state, kCheckpoint);
    const LayerGradients<double> b = single.backward(p.inputs, p.state, p.r_output, &p.r_state, kCheckpoint);
    for (Index i = 0; i < a.k.size(); ++i) EXPECT_EQ(a.k[i], b.k[i]) << "k " << i;
    for (const auto& [name, t] : b.initial_state_tensors) {
        for (Index i = 0; i < t.size(); ++i) EXPECT_EQ(a.initial_state_tensors.at(name)[i], t[i]) << name << " " << i;
    }
}

// Without d_final_state the state term is absent: the gradients equal those with a zero seed.
TEST(GenericBackwardFinalState, MissingSeedIsZero) {
    const auto layer = presets::yaad(options(), MlpInit{false, 0.3, 3});
    const ModelOf<decltype(layer)> model(layer);
    Problem p(model, 17);
    TensorMap zeros;
    for (const auto& [name, t] : p.r_state) zeros.emplace(name, Tensor<double>(t.shape()));
    const LayerGradients<double> none = model.backward(p.inputs, p.state, p.r_output, nullptr, kCheckpoint);
    const LayerGradients<double> zero = model.backward(p.inputs, p.state, p.r_output, &zeros, kCheckpoint);
    for (Index i = 0; i < none.v.size(); ++i) EXPECT_EQ(none.v[i], zero.v[i]) << "v " << i;
    for (const auto& [name, t] : zero.initial_state_tensors) {
        for (Index i = 0; i < t.size(); ++i) EXPECT_EQ(none.initial_state_tensors.at(name)[i], t[i]) << name << " " << i;
    }
}

// ---------------------------------------------------------------------------------------------
// Errors.

TEST(GenericBackwardErrors, RejectsBadCheckpointSpacing) {
    const auto layer = presets::gated_deltanet(options());
    const ModelOf<decltype(layer)> model(layer);
    Problem p(model, 19);
    EXPECT_THROW(model.backward(p.inputs, p.state, p.r_output, nullptr, 0), ConfigError);
    EXPECT_THROW(model.backward(p.inputs, p.state, p.r_output, nullptr, -2), ConfigError);
}

TEST(GenericBackwardErrors, RejectsWrongShapesAndNames) {
    const auto layer = presets::titans(options(), 2, 1, MlpInit{false, 0.3, 3});
    const ModelOf<decltype(layer)> model(layer);
    Problem p(model, 23);

    const Tensor<double> wrong_output({kB, kT, kH, kD + 1});
    EXPECT_THROW(model.backward(p.inputs, p.state, wrong_output, nullptr, kCheckpoint), InputError);

    TensorMap unknown = p.r_state;
    unknown["W9"] = Tensor<double>({kB, kH, 1, 1});
    try {
        model.backward(p.inputs, p.state, p.r_output, &unknown, kCheckpoint);
        ADD_FAILURE() << "an unknown state tensor name was accepted";
    } catch (const InputError& error) {
        EXPECT_NE(std::string(error.what()).find("'W9'"), std::string::npos) << error.what();
    }

    TensorMap misshapen = p.r_state;
    misshapen.at("W1") = Tensor<double>({kB, kH, 1, 1});
    EXPECT_THROW(model.backward(p.inputs, p.state, p.r_output, &misshapen, kCheckpoint), InputError);

    TensorMap missing_gate = p.inputs;
    missing_gate.erase("eta");
    EXPECT_THROW(model.backward(missing_gate, p.state, p.r_output, nullptr, kCheckpoint), InputError);

    TensorMap short_keys = p.inputs;
    short_keys.at("k") = Tensor<double>({kB, kT - 1, kH, kD});
    EXPECT_THROW(model.backward(short_keys, p.state, p.r_output, nullptr, kCheckpoint), InputError);

    TensorMap flat_gate = p.inputs;
    flat_gate.at("eta") = Tensor<double>({kB * kT * kH});
    EXPECT_THROW(model.backward(flat_gate, p.state, p.r_output, nullptr, kCheckpoint), InputError);

    const auto one_sequence = layer.initial_state<double>(1);
    EXPECT_THROW(generic_layer_backward(layer, as_inputs(p.inputs), &one_sequence, p.r_output.view(), nullptr, kCheckpoint),
                 InputError);
}

}  // namespace
