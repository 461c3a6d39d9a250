// Activations of a deep memory and their derivatives: gelu (erf), gelu_tanh (the tanh
// approximation with its exact derivative, as in the official TTT-MLP), silu, relu, tanh, identity.
#pragma once

#include <numbers>
#include <string>

#include "miras/core/error.hpp"
#include "miras/core/scalar.hpp"

namespace miras {

enum class Activation { gelu, gelu_tanh, silu, relu, tanh, identity };

inline const char* activation_name(Activation a) {
    switch (a) {
        case Activation::gelu: return "gelu";
        case Activation::gelu_tanh: return "gelu_tanh";
        case Activation::silu: return "silu";
        case Activation::relu: return "relu";
        case Activation::tanh: return "tanh";
        case Activation::identity: return "identity";
    }
    return "?";
}

inline Activation parse_activation(const std::string& name) {
    for (Activation a : {Activation::gelu, Activation::gelu_tanh, Activation::silu, Activation::relu,
                         Activation::tanh, Activation::identity}) {
        if (name == activation_name(a)) return a;
    }
    throw ConfigError("activation '" + name + "' is unknown; valid are gelu, gelu_tanh, silu, relu, tanh, identity");
}

/// sigma(z).
template <class S>
S activate(Activation a, const S& z) {
    switch (a) {
        case Activation::gelu: return S(0.5) * z * (S(1) + math::erf(z * S(1.0 / std::numbers::sqrt2)));
        case Activation::gelu_tanh: {
            const S c = S(std::sqrt(2.0 / std::numbers::pi));
            return S(0.5) * z * (S(1) + math::tanh(c * (z + S(0.044715) * z * z * z)));
        }
        case Activation::silu: return z * math::sigmoid(z);
        case Activation::relu: return z > S(0) ? z : S(0);
        case Activation::tanh: return math::tanh(z);
        case Activation::identity: return z;
    }
    return z;
}

/// sigma'(z).
template <class S>
S activate_derivative(Activation a, const S& z) {
    switch (a) {
        case Activation::gelu: {
            const S cdf = S(0.5) * (S(1) + math::erf(z * S(1.0 / std::numbers::sqrt2)));
            const S pdf = math::exp(S(-0.5) * z * z) * S(1.0 / std::sqrt(2.0 * std::numbers::pi));
            return cdf + z * pdf;
        }
        case Activation::gelu_tanh: {
            const S c = S(std::sqrt(2.0 / std::numbers::pi));
            const S t = math::tanh(c * (z + S(0.044715) * z * z * z));
            return S(0.5) * (S(1) + t) + S(0.5) * z * (S(1) - t * t) * c * (S(1) + S(3 * 0.044715) * z * z);
        }
        case Activation::silu: {
            const S s = math::sigmoid(z);
            return s * (S(1) + z * (S(1) - s));
        }
        case Activation::relu: return z > S(0) ? S(1) : S(0);
        case Activation::tanh: {
            const S t = math::tanh(z);
            return S(1) - t * t;
        }
        case Activation::identity: return S(1);
    }
    return S(1);
}

}  // namespace miras
