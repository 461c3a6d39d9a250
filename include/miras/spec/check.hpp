// The checks `miras check` runs on a spec: the expectations the spec declares plus the generic ones
// every layer must pass (token-by-token stepping, split-and-resume, finite outputs over a horizon,
// and the inner gradient against a central finite difference).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "miras/spec/spec.hpp"

namespace miras {

struct CheckResult {
    enum class Status { ok, failed, skipped };
    std::string name;
    Status status = Status::ok;
    std::string detail;
};

inline const char* status_name(CheckResult::Status status) {
    switch (status) {
        case CheckResult::Status::ok: return "ok";
        case CheckResult::Status::failed: return "FAILED";
        case CheckResult::Status::skipped: return "skipped";
    }
    return "?";
}

struct CheckOptions {
    /// Tokens of the finiteness run when the spec declares no expect.finite_for_tokens.
    Index horizon = 4096;
    /// Relative tolerance of the stepping and split-and-resume comparisons (double).
    double execution_tolerance = 1e-12;
    /// Relative tolerance of the inner gradient against the finite difference.
    double gradient_tolerance = 1e-6;
    unsigned seed = 20250101;
};

/// Random inputs for a layer, in double: q and k of unit norm, v of unit norm, and one tensor per
/// per-token gate (random in the gate's range, or the constant of `constants` where it names one).
struct SpecInputs {
    Tensor<double> q, k, v;
    std::map<std::string, Tensor<double>> gates;

    Inputs<double> view() const;
    /// Tokens [begin, end) of every tensor (axes that hold several entries per token, such as the
    /// keys of a layer that writes several pairs per token, keep all entries of those tokens).
    SpecInputs slice(Index begin, Index end) const;
};

SpecInputs random_inputs(const AnyLayer& layer, Index batch, Index tokens, unsigned seed,
                         const std::map<std::string, double>* constants = nullptr);

/// The outcome of a memorisation probe.
struct ProbeResult {
    Index pairs = 0;
    /// Fraction of reads whose largest dot product over all written values is with their own value.
    double accuracy = 0.0;
    /// Mean of ||o_i - v_i||^2 over pairs and heads (values have unit norm).
    double mean_squared_error = 0.0;
};

/// Writes `tokens` tokens of unit-norm random keys and values at the probe gates, then reads every
/// written key back from the final state (query scale 1, read before any further write).
ProbeResult memorisation_probe(const LayerSpec& spec, Index tokens, unsigned seed);

/// Runs every check on a spec. A spec whose layer cannot be built gives a SpecError instead.
std::vector<CheckResult> run_spec_checks(const LayerSpec& spec, const CheckOptions& options = {});

}  // namespace miras
