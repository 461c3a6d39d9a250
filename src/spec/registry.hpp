// The registry of JSON-buildable layers: the component type lists and the table entry of one
// combination. Adding a component is one line in its list below plus its `from_spec` builder in
// components.hpp. The registry forms the cartesian product of the lists with Boost.Hana and keeps
// the combinations that miras::is_valid_combination_v accepts.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <boost/hana.hpp>
#include <nlohmann/json.hpp>

#include "miras/algorithm/generalized_delta.hpp"
#include "miras/algorithm/gradient_step.hpp"
#include "miras/algorithm/implicit_step.hpp"
#include "miras/algorithm/least_squares.hpp"
#include "miras/algorithm/nonparametric.hpp"
#include "miras/bias/dot_product.hpp"
#include "miras/bias/l2.hpp"
#include "miras/memory/kv_cache.hpp"
#include "miras/memory/matrix.hpp"
#include "miras/memory/vector.hpp"
#include "miras/retention/decay.hpp"
#include "miras/retention/none.hpp"
#include "miras/spec/any_layer.hpp"

namespace miras::spec_registry {

namespace hana = boost::hana;

// Each memory type is instantiated in its own translation units (registry_<memory>*.cpp), which
// explicitly instantiate entries_for<Memory, Part> for Part = 0 .. registry_parts<Memory> - 1.
inline constexpr auto memory_types = hana::tuple_t<MatrixMemory, VectorMemory, KVCacheMemory>;
inline constexpr auto bias_types = hana::tuple_t<DotProductBias, L2Bias>;
inline constexpr auto retention_types = hana::tuple_t<NoRetention, DecayRetention>;
inline constexpr auto algorithm_types =
    hana::tuple_t<GradientStep, ImplicitStep, LeastSquares, GeneralizedDelta, NonParametric>;

/// One buildable combination. `build` and `inner_gradient` read the validated (normalised) spec.
struct Entry {
    std::string memory, bias, retention, algorithm;
    std::unique_ptr<AnyLayer> (*build)(const nlohmann::json& spec);
    /// Largest relative difference between the gradient J^T dl/dy that the memory and bias compute
    /// and a central finite difference of the inner loss, in double. Negative when the memory has
    /// no parameters to differentiate (the kv cache).
    double (*inner_gradient)(const nlohmann::json& spec, unsigned seed);
    /// Largest distance, over heads, between the unit direction of the layer's own one-token update
    /// from a random state and the unit direction of minus the central-difference gradient of the
    /// inner loss there. Per-token gates are set to g = 0, eta = 0.5, beta = 1, p = k, a = b = 0.
    /// Meaningful only for gradient steps (see check.cpp); negative for the kv cache.
    double (*update_direction)(const nlohmann::json& spec, unsigned seed);

    std::string key() const { return memory + "/" + bias + "/" + retention + "/" + algorithm; }
};

/// Number of translation units that share the combinations of a memory. The matrix memory has the
/// most valid combinations, so it is split to keep each unit's compile time and memory down.
template <class Memory>
inline constexpr int registry_parts = 1;
template <>
inline constexpr int registry_parts<MatrixMemory> = 2;

/// The valid combinations whose memory is Memory and whose index among them is Part modulo
/// registry_parts<Memory>. Defined in registry_impl.hpp.
template <class Memory, int Part>
std::vector<Entry> entries_for();

/// The whole table, every memory's entries, built once.
const std::vector<Entry>& all_entries();

/// Why a combination is not valid, naming the two fields that clash; empty when it is valid or
/// when one of the names is unknown.
struct Clash {
    std::string pointer;  // the field to change
    std::string message;
};
Clash combination_clash(const std::string& memory, const std::string& bias, const std::string& retention,
                        const std::string& algorithm);

}  // namespace miras::spec_registry
