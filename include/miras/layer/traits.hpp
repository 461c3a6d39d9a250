// Which combinations of the four choices have a meaning. Layer rejects the others at compile time
// with a message in words; the registry of JSON layers uses the same trait to leave them out.
#pragma once

#include <type_traits>

namespace miras {

struct MatrixMemory;
struct VectorMemory;
struct KVCacheMemory;
struct DotProductBias;
struct L2Bias;
struct NoRetention;
struct DecayRetention;
struct GradientStep;
struct ImplicitStep;
struct LeastSquares;
struct GeneralizedDelta;
struct NonParametric;
struct MlpMemory;
struct MirrorRetention;
struct MiniBatchGD;
struct Momentum;

template <class Memory, class Bias, class Retention, class Algorithm>
struct combination_rules {
    static constexpr bool memory_matches_algorithm =
        std::is_same_v<Memory, KVCacheMemory> == std::is_same_v<Algorithm, NonParametric>;
    static constexpr bool algorithm_supports_memory =
        !(std::is_same_v<Algorithm, ImplicitStep> || std::is_same_v<Algorithm, LeastSquares> ||
          std::is_same_v<Algorithm, GeneralizedDelta>) ||
        std::is_same_v<Memory, MatrixMemory>;
    static constexpr bool algorithm_supports_bias =
        !(std::is_same_v<Algorithm, LeastSquares> || std::is_same_v<Algorithm, GeneralizedDelta> ||
          std::is_same_v<Algorithm, NonParametric>) ||
        std::is_same_v<Bias, L2Bias>;
    /// A deep memory's gradient depends on its weights: only the algorithms that take the gradient
    /// at stored weights (mini-batch GD, momentum) can train it.
    static constexpr bool deep_memory_has_gradient_algorithm =
        !std::is_same_v<Memory, MlpMemory> ||
        std::is_same_v<Algorithm, MiniBatchGD> || std::is_same_v<Algorithm, Momentum>;
    /// A mirror retention leaves the memory in its dual space until the algorithm finishes the step.
    static constexpr bool retention_finished_by_algorithm =
        !std::is_same_v<Retention, MirrorRetention> || std::is_same_v<Algorithm, GradientStep> ||
        std::is_same_v<Algorithm, MiniBatchGD> || std::is_same_v<Algorithm, Momentum>;
    static constexpr bool valid = memory_matches_algorithm && algorithm_supports_memory && algorithm_supports_bias &&
                                  deep_memory_has_gradient_algorithm && retention_finished_by_algorithm;
};

/// True when Layer<Memory, Bias, Retention, Algorithm> is a meaningful layer.
template <class Memory, class Bias, class Retention, class Algorithm>
inline constexpr bool is_valid_combination_v = combination_rules<Memory, Bias, Retention, Algorithm>::valid;

}  // namespace miras
