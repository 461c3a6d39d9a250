// Feature maps phi applied to keys and queries before a parametric memory reads or writes.
//
//   identity:      phi(x) = x
//   elu_plus_one:  phi(x) = elu(x) + 1 (Katharopoulos et al. 2020), positive features
//   polynomial:    phi(x) = [sqrt(a_0), sqrt(a_1) x, sqrt(a_2) x (x) x, ..., sqrt(a_p) x^(x)p],
//                  so phi(q) . phi(k) = sum_i a_i (q . k)^i, the truncated Taylor kernel of exp(q . k)
//                  (Atlas, Behrouz et al. 2025, Eq. 5); the coefficients a_i start at 1/i!.
// The polynomial map uses the Kronecker powers, so its dimension is sum_{i<=p} d^i.
#pragma once

#include <string>
#include <vector>

#include "miras/core/error.hpp"
#include "miras/core/scalar.hpp"

namespace miras {

enum class FeatureKind { identity, elu_plus_one, polynomial };

inline const char* feature_kind_name(FeatureKind kind) {
    switch (kind) {
        case FeatureKind::identity: return "identity";
        case FeatureKind::elu_plus_one: return "elu_plus_one";
        case FeatureKind::polynomial: return "polynomial";
    }
    return "?";
}

struct FeatureMap {
    FeatureKind kind = FeatureKind::identity;
    /// Polynomial coefficients a_0..a_p (each >= 0); the degree p is their count minus one.
    std::vector<double> coefficients;

    static FeatureMap identity() { return {}; }
    static FeatureMap elu_plus_one() { return {FeatureKind::elu_plus_one, {}}; }
    /// Polynomial map of the given degree with coefficients 1/i!.
    static FeatureMap polynomial(int degree) {
        if (degree < 1 || degree > 6) {
            throw ConfigError("polynomial feature map degree " + std::to_string(degree) + " is invalid; valid is 1 to 6");
        }
        FeatureMap map{FeatureKind::polynomial, {}};
        double factorial = 1.0;
        for (int i = 0; i <= degree; ++i) {
            if (i > 0) factorial *= i;
            map.coefficients.push_back(1.0 / factorial);
        }
        return map;
    }

    int degree() const { return static_cast<int>(coefficients.size()) - 1; }

    /// Dimension of phi(x) for an input of dimension d.
    Index output_dim(Index d) const {
        if (kind != FeatureKind::polynomial) return d;
        Index total = 0, power = 1;
        for (int i = 0; i <= degree(); ++i) {
            total += power;
            power *= d;
        }
        return total;
    }

    void validate() const {
        if (kind != FeatureKind::polynomial) return;
        if (coefficients.size() < 2) throw ConfigError("polynomial feature map needs at least the coefficients a_0 and a_1");
        for (std::size_t i = 0; i < coefficients.size(); ++i) {
            if (!(coefficients[i] >= 0.0) || !std::isfinite(coefficients[i])) {
                throw ConfigError("polynomial coefficient a_" + std::to_string(i) + " = " +
                                  std::to_string(coefficients[i]) + " is invalid; valid is a finite value >= 0");
            }
        }
    }

    /// out = phi(x), x of dimension d.
    template <class S>
    void apply(const S* x, Index d, Vec<S>& out) const {
        out.resize(output_dim(d));
        switch (kind) {
            case FeatureKind::identity:
                for (Index i = 0; i < d; ++i) out[i] = x[i];
                return;
            case FeatureKind::elu_plus_one:
                for (Index i = 0; i < d; ++i) out[i] = x[i] > S(0) ? x[i] + S(1) : math::exp(x[i]);
                return;
            case FeatureKind::polynomial: {
                // Block i holds x^(x)i; block i is built from block i-1 by one more outer product.
                out[0] = S(1);
                Index previous_start = 0, previous_size = 1, start = 1;
                for (int power = 1; power <= degree(); ++power) {
                    for (Index j = 0; j < previous_size; ++j) {
                        for (Index l = 0; l < d; ++l) out[start + j * d + l] = out[previous_start + j] * x[l];
                    }
                    previous_start = start;
                    previous_size *= d;
                    start += previous_size;
                }
                Index offset = 0, size = 1;
                for (int power = 0; power <= degree(); ++power) {
                    const S root = math::sqrt(S(coefficients[static_cast<std::size_t>(power)]));
                    for (Index j = 0; j < size; ++j) out[offset + j] *= root;
                    offset += size;
                    size *= d;
                }
                return;
            }
        }
    }

    /// Vector-Jacobian product: dx = (d phi / d x)^T dout. With coefficient_gradient given, also
    /// d(dout . phi(x)) / d a_i for every coefficient of a polynomial map.
    template <class S>
    void vjp(const S* x, Index d, const Vec<S>& dout, Vec<S>& dx, Vec<S>* coefficient_gradient = nullptr) const {
        dx.setZero(d);
        switch (kind) {
            case FeatureKind::identity:
                dx = dout.head(d);
                return;
            case FeatureKind::elu_plus_one:
                for (Index i = 0; i < d; ++i) dx[i] = dout[i] * (x[i] > S(0) ? S(1) : math::exp(x[i]));
                return;
            case FeatureKind::polynomial: {
                if (coefficient_gradient != nullptr) coefficient_gradient->setZero(degree() + 1);
                // Monomial x_{j1} ... x_{ji} at flat index (j1 ... ji) in base d; its derivative with
                // respect to x_l sums the products with one factor x_l removed.
                Index offset = 0, size = 1;
                std::vector<Index> digits;
                for (int power = 0; power <= degree(); ++power) {
                    const S a = S(coefficients[static_cast<std::size_t>(power)]);
                    const S root = math::sqrt(a);
                    digits.assign(static_cast<std::size_t>(power), 0);
                    for (Index flat = 0; flat < size; ++flat) {
                        Index rest = flat;
                        for (int m = power - 1; m >= 0; --m) {
                            digits[static_cast<std::size_t>(m)] = rest % d;
                            rest /= d;
                        }
                        const S weight = dout[offset + flat];
                        S monomial = S(1);
                        for (int m = 0; m < power; ++m) monomial *= x[digits[static_cast<std::size_t>(m)]];
                        if (coefficient_gradient != nullptr && a > S(0)) {
                            (*coefficient_gradient)[power] += weight * monomial / (S(2) * root);
                        }
                        for (int m = 0; m < power; ++m) {
                            S others = S(1);
                            for (int n = 0; n < power; ++n) {
                                if (n != m) others *= x[digits[static_cast<std::size_t>(n)]];
                            }
                            dx[digits[static_cast<std::size_t>(m)]] += weight * root * others;
                        }
                    }
                    offset += size;
                    size *= d;
                }
                return;
            }
        }
    }
};

}  // namespace miras
