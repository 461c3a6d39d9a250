// Human-readable descriptions: the catalog of components and their spec fields (`miras list`) and
// the update rule of a validated spec in words and symbols (`miras describe`). The symbols follow
// the notation of the headers: x = phi(k), W' the memory after retention, s the query scale.
#include <sstream>

#include "miras/spec/spec.hpp"

namespace miras {

const std::vector<ComponentInfo>& component_catalog() {
    static const std::vector<ComponentInfo> catalog = {
        {"memory", "matrix", "W [V, D], read as y = W phi(k)",
         {{"feature_map", "{type: identity | elu_plus_one | polynomial, degree 1-6, coefficients a_0..a_p}"}}},
        {"memory", "vector", "w [V], read elementwise as y = w * phi(k); needs D = V",
         {{"feature_map", "as for matrix"}}},
        {"memory", "kv_cache", "every (phi(k), v) pair, read by softmax (Nadaraya-Watson)",
         {{"feature_map", "as for matrix"}, {"window", "keep the last n pairs; 0 keeps all (default 0)"}}},
        {"memory", "mlp", "deep memory y = [x +] N(W_L s(... s(W_1 x + b_1)) + b_L), trained by backpropagation",
         {{"feature_map", "as for matrix"},
          {"depth", "weight matrices L, 1-16 (default 2)"},
          {"expansion", "hidden width / D, > 0 (default 4)"},
          {"activation", "gelu (default) | gelu_tanh | silu | relu | tanh | identity"},
          {"residual", "add the input x (default true; needs D = V)"},
          {"biases", "bias vectors b_l (default false)"},
          {"gated", "Atlas++ branch W1 (s(W2 x) * W3 x) (default false)"},
          {"norm", "LayerNorm N on the branch: none (default) | plain | affine"},
          {"norm_weight", "affine LayerNorm weight: 1, V or H * V values (default [1])"},
          {"norm_bias", "affine LayerNorm bias: 1, V or H * V values (default [0])"},
          {"norm_eps", "LayerNorm epsilon > 0 (default 1e-6)"},
          {"read_adds_branch", "read r + N(r) instead of the trained map (flash-linear-attention TTT)"},
          {"init", "{zero: false, std: 0.02, seed: 0}: initial weights std N(0, 1), or zero"}}},
        {"attentional_bias", "dot_product", "l(y, v) = -<y, v> (Hebbian)", {}},
        {"attentional_bias", "l2", "l(y, v) = 1/2 ||y - v||^2 (regression)",
         {{"subtract_key", "regress onto v - k (official TTT; needs K = V)"}}},
        {"attentional_bias", "lp", "l(y, v) = sum_j |y_j - v_j|^p (Moneta)",
         {{"p", "p >= 1 (default 3)"},
          {"smoothing", "none (default) | tanh_sign (Sign(e) ~ tanh(a e)) | sqrt_abs (|e| ~ sqrt(e^2 + eps))"},
          {"sharpness", "a of tanh_sign, > 0 (default 10)"},
          {"eps", "eps of sqrt_abs, > 0 (default 1e-6)"}}},
        {"attentional_bias", "huber", "Huber loss of e = y - v with threshold delta (Yaad)",
         {{"kind", "coordinate (default) | norm | mixture"}, {"delta", "gate delta > 0, per head (default {value: 1})"}}},
        {"attentional_bias", "value_shift", "worst case of 1/2 ||y - (v + dv)||^2 over ||dv|| <= Delta",
         {{"radius", "Delta >= 0 (default 0.1)"}}},
        {"retention", "none", "W' = W_{t-1}", {}},
        {"retention", "decay", "W' = exp(g_t) W_{t-1}, log-gate g <= 0 per head or per key/value channel",
         {{"gate", "gate g (required)"}, {"placement", "decay_then_gradient (default) | gradient_then_decay"}}},
        {"retention", "mirror", "W_t = post(pre(W_{t-1}) - eta grad), alpha = exp(g) (Moneta, Memora)",
         {{"kind", "lq | elastic_net | kl | sigmoid (required)"},
          {"gate", "log-gate g, per head (default {value: 0})"},
          {"q", "lq: q > 1, not 3 (default 4)"},
          {"threshold", "elastic_net: soft threshold gamma >= 0 (default 1e-3)"},
          {"domain", "kl: softmax over each row (default) or the whole block"},
          {"floor", "clamp before the log of kl and sigmoid, in (0, 0.5) (default 1e-12)"}}},
        {"algorithm", "gd", "one gradient step: W_t = W' - eta dl/dW",
         {{"rate", "gate eta (default {value: 1})"}, {"separate_read_key", "predict at an extra key p (Comba)"}}},
        {"algorithm", "implicit", "proximal step in closed form (Longhorn)",
         {{"rate", "gate eta (default {value: 1})"}, {"diagonal", "diagonal approximation of the official kernel"}}},
        {"algorithm", "least_squares", "exact ridge regression over all pairs (MesaNet)",
         {{"strength", "gate beta, per head (default {value: 1})"},
          {"ridge", "fixed gate lambda > 0, per head or key channel (default 1)"},
          {"solver", "exact (default) | conjugate_gradient"},
          {"cg_iterations", "conjugate gradient iterations, 1-10000 (default 30)"}}},
        {"algorithm", "generalized_delta", "rank-one correction (W a) b^T plus the write (RWKV-7)",
         {{"rate", "gate eta on the write (default {value: 1}); per-token inputs a and b"}}},
        {"algorithm", "nonparametric", "append the pair to the kv cache", {}},
        {"algorithm", "minibatch_gd", "mini-batch gradient descent, every gradient at the mini-batch's start weights (TTT)",
         {{"minibatch_size", "b, 1-65536 (default 1: online)"},
          {"rate", "gate eta, per head (default {value: 1})"},
          {"rate_form", "per_token (default) | query_token | factored"},
          {"token_factor", "factored: b values f[i] >= 0 (default 1/i)"},
          {"clip_norm", "clip each gradient to this norm, 0 = off (default)"}}},
        {"algorithm", "momentum", "momentum S_t = theta S_{t-1} - eta G_t, W_t = alpha W_{t-1} + S_t (Titans, Atlas)",
         {{"rate", "gate eta, per head (default {value: 1})"},
          {"momentum", "log-gate theta, per head (default {value: log 0.9})"},
          {"minibatch_size", "gradients at the mini-batch's start weights, 1-65536 (default 1)"},
          {"window", "Omega window c, 1-4096 (default 1)"},
          {"window_weight", "gate gamma >= 0, per head (default {value: 1})"},
          {"newton_schulz_steps", "k, 0-100; k > 0 gives W_t = alpha W_{t-1} - eta NS_k(S_t) (Atlas) (default 0)"},
          {"use_momentum", "false: S_t = -eta G_t (OmegaNet) (default true)"},
          {"clip_norm", "clip G_t to this norm, 0 = off (default)"}}},
    };
    return catalog;
}

namespace {

using nlohmann::json;

std::string decay_symbol(const json& retention, const std::string& state, bool elementwise) {
    if (retention.at("type") == "none") return state;
    const json& gate = retention.at("gate");
    const std::string g = gate.contains("gate") ? "exp(g_t)" : "exp(g)";
    const std::string axis = gate.at("axis").get<std::string>();
    if (elementwise) return g + " * " + state;
    if (axis == "key") return state + " diag(" + g + ")";
    if (axis == "value") return "diag(" + g + ") " + state;
    return g + " " + state;
}

std::string gate_symbol(const json& gate, const std::string& name) {
    const std::string axis = gate.at("axis").get<std::string>();
    if (gate.contains("gate")) return name + "_t" + (axis == "head" ? "" : "[" + axis + "]");
    const json& values = gate.at("values");
    if (values.size() == 1) {
        std::ostringstream out;
        out << values[0].get<double>();
        return out.str();
    }
    return name + (axis == "head" ? "_h" : "[" + axis + "]");
}

/// Writes "coef term", leaving out a coefficient of 1.
std::string scaled(const std::string& coefficient, const std::string& term) {
    return coefficient == "1" ? term : coefficient + " " + term;
}

std::string feature_words(const json& memory) {
    const json& map = memory.at("feature_map");
    const std::string type = map.at("type").get<std::string>();
    if (type == "identity") return "identity features (x = k)";
    if (type == "elu_plus_one") return "elu + 1 features (x = elu(k) + 1)";
    return "polynomial features of degree " + std::to_string(map.at("degree").get<int>()) +
           " (x . x' = sum_i a_i (k . k')^i)";
}

}  // namespace

UpdateDescription describe_update(const LayerSpec& spec) {
    const json& j = spec.json;
    const std::string memory = j.at("memory").at("type"), bias = j.at("attentional_bias").at("type");
    const std::string algorithm = j.at("algorithm").at("type");
    const json& retention = j.at("retention");
    const bool decays = retention.at("type") == "decay";
    const bool gradient_first = decays && retention.at("placement") == "gradient_then_decay";
    const bool vector = memory == "vector";
    const std::string W = vector ? "w" : "W";
    const std::string before = decays && !gradient_first ? W + "'" : W + "_{t-1}";
    const auto predict = [&](const std::string& state, const std::string& key) {
        return vector ? state + " * " + key : state + " " + key;
    };
    const auto outer = [&](const std::string& left, const std::string& right) {
        return vector ? left + " * " + right : left + " " + right + "^T";
    };

    UpdateDescription d;
    std::ostringstream words;
    words << "A " << memory << " memory with " << feature_words(j.at("memory"));
    if (memory == "kv_cache") {
        const Index window = j.at("memory").at("window").get<Index>();
        words << (window > 0 ? ", keeping the last " + std::to_string(window) + " pairs" : ", keeping every pair");
    }
    if (memory == "mlp") {
        const json& m = j.at("memory");
        words << ", " << m.at("depth").get<Index>() << " weight matrices and " << m.at("activation").get<std::string>()
              << " activations" << (m.at("residual").get<bool>() ? ", residual" : "")
              << (m.at("norm") == "none" ? "" : ", LayerNorm (" + m.at("norm").get<std::string>() + ")");
    }
    const json& bias_section = j.at("attentional_bias");
    words << ", fitted to the ";
    if (bias == "l2") {
        words << "l2 regression loss 1/2 ||y - v||^2"
              << (bias_section.at("subtract_key").get<bool>() ? " with the target v - k" : "");
    } else if (bias == "lp") {
        words << "l_p loss sum |y - v|^p with p = " << bias_section.at("p").get<double>();
    } else if (bias == "huber") {
        words << "Huber loss (" << bias_section.at("kind").get<std::string>() << ")";
    } else if (bias == "value_shift") {
        words << "value-shift robust loss with radius " << bias_section.at("radius").get<double>();
    } else {
        words << "dot-product loss -<y, v>";
    }
    if (algorithm == "gd") words << " by one gradient step per written pair";
    if (algorithm == "implicit") words << " by one implicit (proximal) step per written pair";
    if (algorithm == "least_squares") words << " exactly, by ridge regression over all pairs so far";
    if (algorithm == "generalized_delta") words << " by the generalised delta rule (a rank-one correction and a write)";
    if (algorithm == "nonparametric") words << " without parameters: the read is softmax attention over the cache";
    if (algorithm == "minibatch_gd") {
        words << " by gradient descent in mini-batches of " << j.at("algorithm").at("minibatch_size").get<Index>()
              << " (" << j.at("algorithm").at("rate_form").get<std::string>() << " rate)";
    }
    if (algorithm == "momentum") {
        const json& a = j.at("algorithm");
        words << " by gradient descent " << (a.at("use_momentum").get<bool>() ? "with momentum" : "without momentum");
        if (a.at("window").get<Index>() > 1) words << " over an Omega window of " << a.at("window").get<Index>() << " pairs";
        if (a.at("newton_schulz_steps").get<int>() > 0) {
            words << ", orthogonalised by " << a.at("newton_schulz_steps").get<int>() << " Newton-Schulz steps";
        }
    }
    if (retention.at("type") == "mirror") {
        words << ", with the mirror retention '" << retention.at("kind").get<std::string>() << "'";
    }
    if (decays) {
        words << ", with a " << (retention.at("gate").contains("gate") ? "per-token" : "fixed") << " decay per "
              << retention.at("gate").at("axis").get<std::string>();
        if (algorithm == "nonparametric") {
            words << " that lowers the scores of older pairs";
        } else if (algorithm == "least_squares") {
            words << " on both accumulated statistics";
        } else {
            const std::string step = algorithm == "generalized_delta" ? "the correction reads" : "the gradient is taken at";
            words << (gradient_first ? "; " + step + " the previous state (gradient_then_decay)"
                                     : "; " + step + " the decayed state (decay_then_gradient)");
        }
    } else if (retention.at("type") == "none") {
        words << ", with no retention";
    }
    words << ". The output reads the memory "
          << (j.at("execution").at("read") == "before_write" ? "before" : "after") << " the write of each token.";
    d.words = words.str();

    d.symbols.push_back("x = phi(k_t)");
    if (decays && !gradient_first && algorithm != "least_squares" && algorithm != "nonparametric") {
        d.symbols.push_back(W + "' = " + decay_symbol(retention, W + "_{t-1}", vector));
    }
    const std::string retained = gradient_first ? decay_symbol(retention, W + "_{t-1}", vector) : before;
    const bool deep = algorithm == "minibatch_gd" || algorithm == "momentum" || memory == "mlp" ||
                      retention.at("type") == "mirror" || (bias != "l2" && bias != "dot_product");
    if (deep) {
        const std::string mirror_kind = retention.at("type") == "mirror" ? retention.at("kind").get<std::string>() : "";
        const std::string pre = mirror_kind.empty() ? retained : "pre_" + mirror_kind + "(" + W + "_{t-1})";
        const std::string post = mirror_kind.empty() ? "" : "post_" + mirror_kind;
        const auto wrapped = [&](const std::string& text) { return post.empty() ? text : post + "(" + text + ")"; };
        if (algorithm == "minibatch_gd" || algorithm == "momentum") {
            d.symbols.push_back("G_i = grad_W l(M(W_0; x_i), v_i)  [W_0: the weights at the start of the mini-batch]");
        } else {
            d.symbols.push_back("G_t = grad_W l(M(" + before + "; x), v_t)");
        }
        if (algorithm == "momentum") {
            const json& a = j.at("algorithm");
            const std::string eta = gate_symbol(a.at("rate"), "eta");
            const std::string theta = a.at("use_momentum").get<bool>() ? "exp(" + gate_symbol(a.at("momentum"), "theta") + ") S_{t-1}" : "0";
            const std::string G = a.at("window").get<Index>() > 1 ? "sum_{i=t-c+1..t} gamma_i G_i" : "G_t";
            if (a.at("newton_schulz_steps").get<int>() > 0) {
                d.symbols.push_back("S_t = " + theta + " + " + G);
                d.symbols.push_back(W + "_t = " + wrapped(pre + " - " + scaled(eta, "NS_" + std::to_string(a.at("newton_schulz_steps").get<int>()) + "(S_t)")));
            } else {
                d.symbols.push_back("S_t = " + theta + " - " + scaled(eta, G));
                d.symbols.push_back(W + "_t = " + wrapped(pre + " + S_t"));
            }
        } else if (algorithm == "minibatch_gd" && j.at("algorithm").at("rate_form") != "per_token") {
            const std::string form = j.at("algorithm").at("rate_form");
            d.symbols.push_back(W + "_t = W_0 - " + std::string(form == "factored" ? "f[i] sum_{j<=i} eta_j G_j" : "eta_t sum_{j<=i} G_j"));
        } else {
            const std::string eta = gate_symbol(j.at("algorithm").at("rate"), "eta");
            d.symbols.push_back(W + "_t = " + wrapped(pre + " - " + scaled(eta, "G_t")));
        }
        d.symbols.push_back("o_t = M(" + W + "_t; s phi(q_t))");
        return d;
    }
    if (algorithm == "gd" || (algorithm == "implicit" && bias == "dot_product")) {
        const json& rate = j.at("algorithm").at("rate");
        const bool separate = algorithm == "gd" && j.at("algorithm").at("separate_read_key").get<bool>();
        const std::string eta = gate_symbol(rate, "eta");
        if (bias == "l2") {
            const std::string prediction = predict(before, separate ? "phi(p_t)" : "x");
            d.symbols.push_back(W + "_t = " + retained + " - " + scaled(eta, outer("(" + prediction + " - v_t)", "x")));
        } else {
            d.symbols.push_back(W + "_t = " + retained + " + " + scaled(eta, outer("v_t", "x")));
        }
    } else if (algorithm == "implicit") {
        const std::string eta = gate_symbol(j.at("algorithm").at("rate"), "eta");
        if (j.at("algorithm").at("diagonal").get<bool>()) {
            d.symbols.push_back("W_t = " + retained + " - eps_t " + before + " diag(x * x) + eps_t v_t x^T");
        } else {
            d.symbols.push_back("W_t = " + retained + " - eps_t (" + before + " x - v_t) x^T");
        }
        d.symbols.push_back("eps_t = " + eta + " / (1 + " + eta + " x^T x)");
    } else if (algorithm == "least_squares") {
        const std::string beta = gate_symbol(j.at("algorithm").at("strength"), "beta");
        std::string gamma;
        if (decays) gamma = retention.at("gate").contains("gate") ? "exp(g_t) " : "exp(g) ";
        d.symbols.push_back("W_t = " + gamma + "W_{t-1} + " + scaled(beta, "v_t x^T"));
        d.symbols.push_back("H_t = " + gamma + "H_{t-1} + " + scaled(beta, "x x^T"));
        d.symbols.push_back("o_t = W_t (H_t + diag(lambda))^{-1} s phi(q_t)  [" +
                            j.at("algorithm").at("solver").get<std::string>() + " solve]");
    } else if (algorithm == "generalized_delta") {
        const std::string eta = gate_symbol(j.at("algorithm").at("rate"), "eta");
        d.symbols.push_back("W_t = " + retained + " + (" + before + " a_t) b_t^T + " + scaled(eta, "v_t x^T"));
    } else {
        d.symbols.push_back(std::string("cache += (x, v_t)") + (decays ? "; G_i += g_t for every cached pair i" : ""));
        d.symbols.push_back("o_t = sum_i softmax_i(s phi(q_t) . x_i" + std::string(decays ? " + G_i" : "") + ") v_i");
    }
    if (algorithm != "least_squares" && algorithm != "nonparametric") {
        d.symbols.push_back("o_t = " + predict(W + "_t", "s phi(q_t)"));
    }
    return d;
}

}  // namespace miras
